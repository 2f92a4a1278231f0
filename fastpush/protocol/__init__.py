"""Sans-I/O protocol logic: bytes and values in, decisions out; no sockets, no event loop."""
