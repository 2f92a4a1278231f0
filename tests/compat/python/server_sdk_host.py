"""Calls WebPubSubServiceClient methods for tests/compat/test_python_server_sdk.py on a version of
azure-messaging-webpubsubservice other than the environment's: started with that version's directory
first on PYTHONPATH (tests/compat/sdk_versions.py), so it imports that SDK and its own dependencies.

    python server_sdk_host.py

One process serves a whole test session: each request names its server and hub, and the host keeps the
client of the latest pair (one test's at a time).

stdout, first: {"version": "<the SDK's VERSION>", "methods": [<the client's public methods>]}
stdin: one JSON request per line, handled in order:
    {"connection_string": "...", "hub": "...", "method": "send_to_all", "args": [...], "kwargs": {...}}
stdout: one JSON line per request: {"ok": true, "result": ...} or {"ok": false, "error": {"type", "message",
"status_code"}}. Bytes travel as {"$bytes": "<base64>"}; a paged result is walked to a list; a model object
(a GroupMember) becomes {"$object": {<attribute>: <value>}}.

Only the standard library and the SDK are imported: nothing of fastpush or its tests.
"""
from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable
from typing import Any

from azure.messaging.webpubsubservice import WebPubSubServiceClient
from azure.messaging.webpubsubservice._version import VERSION


def _revive(value: dict) -> Any:
    return base64.b64decode(value["$bytes"]) if set(value) == {"$bytes"} else value


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Iterable):
        return [_plain(item) for item in value]
    return {"$object": {key.lstrip("_"): _plain(item) for key, item in vars(value).items()}}


def main() -> None:
    methods = sorted(name for name in dir(WebPubSubServiceClient)
                     if not name.startswith("_") and callable(getattr(WebPubSubServiceClient, name)))
    print(json.dumps({"version": VERSION, "methods": methods}), flush=True)
    target, client = None, None
    for line in sys.stdin:
        request = json.loads(line, object_hook=_revive)
        if target != (request["connection_string"], request["hub"]):
            target = (request["connection_string"], request["hub"])
            client = WebPubSubServiceClient.from_connection_string(target[0], hub=target[1])
        try:
            result = _plain(getattr(client, request["method"])(*request["args"], **request["kwargs"]))
            reply = {"ok": True, "result": result}
        except Exception as error:  # every failure is an answer the test side re-raises
            reply = {"ok": False, "error": {"type": type(error).__name__, "message": str(error),
                                            "status_code": getattr(error, "status_code", None)}}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
