"""What a json.webpubsub.azure.v1 subscriber expects from a server, for the Python peers: the
`connected` message first, then each push wrapped like fastpush wraps it, framed once per broadcast."""
from __future__ import annotations

import json

__all__ = ["CONNECTED", "JSON_SUBPROTOCOL", "envelope", "ready_line"]

JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
CONNECTED = json.dumps({"type": "system", "event": "connected", "connectionId": "peer"})


def envelope(text: str) -> str:
    return json.dumps({"type": "message", "from": "server", "dataType": "text", "data": text},
                      separators=(",", ":"))


def ready_line(port: int) -> str:
    """The line the orchestrator waits for, shaped like `fastpush serve`'s connection string."""
    return f"Endpoint=http://127.0.0.1:{port};"
