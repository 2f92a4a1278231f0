"""The Python server SDK (azure-messaging-webpubsubservice) at a version other than the environment's:
one `python python/server_sdk_host.py` process per version for the session (a Python start and the SDK's
imports cost seconds on a busy machine), with that version's directory first on PYTHONPATH, behind objects
the scenarios call like a WebPubSubServiceClient (blocking calls, the SDK's exceptions).

So a scenario is written once against the SDK's own method names and runs on every version
tests/compat/sdk_versions.py lists; a method the version lacks is missing here too (hasattr is False).
"""
from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

HOST = Path(__file__).parent.parent / "python" / "server_sdk_host.py"
CALL_TIMEOUT = 30.0


def _to_host(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [_to_host(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_host(item) for key, item in value.items()}
    return value


def _from_host(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_host(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        if set(value) == {"$object"}:
            return SimpleNamespace(**{key: _from_host(item) for key, item in value["$object"].items()})
        return {key: _from_host(item) for key, item in value.items()}
    return value


def _raise(method: str, error: dict) -> None:
    """The SDK's exception types, as the scenarios catch them for the environment's version."""
    message = f"{method}: {error['type']}: {error['message']}"
    if error["type"] == "ResourceNotFoundError":
        raised: Exception = ResourceNotFoundError(message)
    elif error["status_code"] is not None:
        raised = HttpResponseError(message)
    else:
        raise AssertionError(f"the SDK failed without an HTTP status: {message}")
    raised.status_code = error["status_code"]  # type: ignore[attr-defined]  # set from the response normally
    raise raised


class SdkHost:
    """The host process of one SDK version; close() at the session's end."""

    def __init__(self, sdk_dir: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sdk_dir), os.environ.get("PYTHONPATH", "")])}
        self._process = subprocess.Popen([sys.executable, str(HOST)], env=env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._lock = threading.Lock()  # one call at a time: replies come back in request order
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, name="python-server-sdk-host", daemon=True).start()
        hello = self._read("start-up")
        self.version: str = hello["version"]
        self.methods = frozenset(hello["methods"])

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")  # the host exited

    def _read(self, what: str) -> Any:
        """The host's next line, within CALL_TIMEOUT (the SDK's own HTTP timeouts are longer)."""
        try:
            line = self._lines.get(timeout=CALL_TIMEOUT)
        except queue.Empty:
            line = ""
        if not line:
            self._process.kill()
            stderr = self._process.stderr.read() if self._process.stderr else ""
            raise AssertionError(f"server_sdk_host.py gave no answer to {what} within {CALL_TIMEOUT}s: {stderr}")
        return json.loads(line)

    def call(self, target: dict[str, str], method: str, args: Any, kwargs: Any) -> Any:
        request = json.dumps({**target, "method": method, "args": _to_host(args), "kwargs": _to_host(kwargs)})
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
            reply = self._read(method)
        if not reply["ok"]:
            _raise(method, reply["error"])
        return _from_host(reply["result"])

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()  # the host ends at the end of its input
        try:
            self._process.wait(timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class SubprocessServiceClient:
    """A WebPubSubServiceClient of the host's version for one server and hub."""

    def __init__(self, host: SdkHost, connection_string: str, hub: str):
        self._host = host
        self._target = {"connection_string": connection_string, "hub": hub}
        self.version = host.version

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method not in self._host.methods:
            raise AttributeError(f"azure-messaging-webpubsubservice {self.version} has no {method}")
        return lambda *args, **kwargs: self._host.call(self._target, method, args, kwargs)
