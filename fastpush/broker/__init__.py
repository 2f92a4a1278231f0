"""How a send or a change reaches every node that has connections it concerns: in-process
(MemoryBroker, one node) or through a real Redis server (RedisBroker, many nodes)."""
