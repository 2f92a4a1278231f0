"""The HTTP side of the one port: the front door (parsing, keep-alive, WebSocket handoff) and the REST API."""
