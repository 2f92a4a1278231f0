"""The JavaScript client SDK (@azure/web-pubsub-client), unmodified, in node: one
`node js/client_host.mjs <package>` process per SDK version hosts every client the tests make
with that version (so a test pays no node start-up), for the whole session. Calls go to it as
JSON lines on stdin; results and client events come back on stdout, read by a thread that hands
each event to the loop of the test that made the client.
The client SDK speaks plain ws:// (only the JS *server* SDK, @azure/web-pubsub, refuses http://).

Versions: every @azure/web-pubsub-client in tests/compat/js/package.json is a driver, so adding
a version to the tests is one line there, an npm alias next to the plain entry:

    "@azure/web-pubsub-client": "1.0.4",
    "@azure/web-pubsub-client-1.1.0": "npm:@azure/web-pubsub-client@1.1.0",

then `npm install --no-audit --no-fund` in tests/compat/js to update package-lock.json (which
`npm ci` installs from), and commit both. Each version pinned there runs every scenario.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import itertools
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.compat.drivers import ClientDriver, Event, Message, SdkCallError, SdkClient, Sent
from tests.compat.sdk_versions import npm_packages

JS_DIR = Path(__file__).parent.parent / "js"
PACKAGE = "@azure/web-pubsub-client"
CALL_TIMEOUT = 10.0


def js_client_packages() -> dict[str, str]:
    """{version: package name} for each @azure/web-pubsub-client pinned in js/package.json,
    under its own name or as an npm alias ("npm:@azure/web-pubsub-client@<version>")."""
    return npm_packages(PACKAGE)


def js_client_versions() -> list[str]:
    return list(js_client_packages())


def _to_js(data: Any) -> Any:
    """Bytes as the host passes them (an ArrayBuffer in JS)."""
    return {"$bytes": base64.b64encode(data).decode()} if isinstance(data, bytes | bytearray) else data


def _from_js(data: Any) -> Any:
    if isinstance(data, dict) and set(data) == {"$bytes"}:
        return base64.b64decode(data["$bytes"])
    return data


def _sent(result: dict) -> Sent:
    """A WebPubSubResult: {ackId, isDuplicated}, without ackId for fire-and-forget."""
    result = dict(result)
    sent = Sent(result.pop("ackId", None), result.pop("isDuplicated"))
    assert not result, f"WebPubSubResult has more than ackId and isDuplicated: {result}"
    return sent


class NodeHost:
    """The `node client_host.mjs` process of one SDK version, shared by the tests' loops: written to
    under a lock, read by a thread."""

    def __init__(self, package: str):
        self.process = subprocess.Popen(["node", str(JS_DIR / "client_host.mjs"), package], cwd=JS_DIR,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.clients: dict[int, JsClient] = {}
        self._ids = itertools.count(1)
        self._replies: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._stderr: list[bytes] = []
        self._exited: str | None = None
        threading.Thread(target=self._read, name="js-client-host-stdout", daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), name="js-client-host-stderr",
                         daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if "event" in message:
                client = self.clients.get(message["client"])
                if client is not None:  # else a disposed client's last events (disconnected, stopped)
                    client.deliver(message["event"], message["args"])
            else:
                with self._lock:
                    reply = self._replies.pop(message["id"])
                with contextlib.suppress(concurrent.futures.InvalidStateError):  # its caller timed out
                    reply.set_result(message)
        self.process.wait()
        with self._lock:
            self._exited = f"client_host.mjs exited ({self.process.returncode}): {b''.join(self._stderr).decode()}"
            replies, self._replies = self._replies, {}
        for reply in replies.values():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                reply.set_exception(AssertionError(self._exited))

    async def call(self, client: int, method: str, *args: Any) -> Any:
        """Call `clients[client].<method>(...args)` in node and return its result."""
        reply: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._exited:
                raise AssertionError(self._exited)
            call_id = next(self._ids)
            self._replies[call_id] = reply
            self.process.stdin.write(json.dumps({"id": call_id, "client": client, "method": method,
                                                 "args": list(args)}).encode() + b"\n")
            self.process.stdin.flush()
        result = await asyncio.wait_for(asyncio.wrap_future(reply), CALL_TIMEOUT)
        if not result["ok"]:
            error = result["error"]
            raise SdkCallError(method, error["name"], (error.get("errorDetail") or {}).get("name"),
                               error.get("ackId"), error)
        return result["result"]

    def close(self) -> None:
        """End the process (stdin closed; clients not stopped just lose their sockets)."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=CALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


class JsClient(SdkClient):
    def __init__(self, driver: ClientDriver, host: NodeHost, number: int, loop: asyncio.AbstractEventLoop):
        super().__init__(driver, loop)
        self.host, self.number = host, number

    def deliver(self, kind: str, args: dict) -> None:
        """On the host's reader thread: the event, in the common shape, to the test's loop."""
        event = Event(kind, details=args)
        if kind == "connected":
            event = Event(kind, connection_id=args["connectionId"], user_id=args.get("userId"), details=args)
        elif kind == "disconnected":
            event = Event(kind, connection_id=args.get("connectionId"), details=args)
        elif kind in ("server-message", "group-message"):
            message = args["message"]
            source, from_user = ("server", None) if kind == "server-message" else (message["group"],
                                                                                 message.get("fromUserId"))
            event = Event(kind, message=Message(source, from_user, message["dataType"], _from_js(message["data"]),
                                                message.get("sequenceId")), details=args)
        self.deliver_threadsafe(event)

    async def _call(self, method: str, *args: Any) -> Any:
        return await self.host.call(self.number, method, *args)

    async def _start(self) -> None:
        await self._call("start")

    async def stop(self) -> None:
        await self._call("stop")

    async def _acked(self, method: str, *args: Any, **options: Any) -> Sent:
        options = {name: value for name, value in options.items() if value is not None}
        return _sent(await self._call(method, *args, *([options] if options else [])))

    async def join_group(self, group: str, *, ack_id: int | None = None) -> Sent | None:
        return await self._acked("joinGroup", group, ackId=ack_id)

    async def leave_group(self, group: str, *, ack_id: int | None = None) -> Sent | None:
        return await self._acked("leaveGroup", group, ackId=ack_id)

    async def send_to_group(self, group: str, data: Any, data_type: str, *, no_echo: bool = False,
                            ack: bool = True, ack_id: int | None = None) -> Sent | None:
        return await self._acked("sendToGroup", group, _to_js(data), data_type, noEcho=no_echo or None,
                                 fireAndForget=(not ack) or None, ackId=ack_id)

    async def send_event(self, event: str, data: Any, data_type: str, *, ack: bool = True,
                         ack_id: int | None = None) -> Sent | None:
        return await self._acked("sendEvent", event, _to_js(data), data_type, fireAndForget=(not ack) or None,
                                 ackId=ack_id)

    async def dispose(self) -> None:
        if self.host.clients.pop(self.number, None) is not None:
            await self._call("dispose")


class JsClientDriver(ClientDriver):
    sdk = "js"

    def __init__(self, version: str):
        super().__init__(version)
        self.package = js_client_packages().get(version, PACKAGE)
        self._host: NodeHost | None = None
        self._numbers = itertools.count(1)

    def _started_host(self) -> NodeHost:
        if self._host is None:
            manifest = JS_DIR / "node_modules" / self.package / "package.json"
            if shutil.which("node") is None or not manifest.is_file():
                pytest.fail(f"node and {self.package} are needed; run `npm ci` in {JS_DIR}", pytrace=False)
            installed = json.loads(manifest.read_text())["version"]
            if installed != self.version:
                pytest.fail(f"{self.package} is {installed}, not {self.version}; run `npm ci` in {JS_DIR}",
                            pytrace=False)
            self._host = NodeHost(self.package)
        return self._host

    async def client(self, url: str, protocol: str, *, credential: bool = False,
                     message_retries: int | None = None) -> SdkClient:
        host = self._started_host()
        options = {} if message_retries is None else {"messageRetryOptions": {"maxRetries": message_retries}}
        client = JsClient(self, host, next(self._numbers), asyncio.get_running_loop())
        host.clients[client.number] = client
        await client._call("create", {"url": url, "protocol": protocol, "credential": credential, "options": options})
        return client

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None
