"""The JavaScript client SDK (@azure/web-pubsub-client 1.0.4), unmodified, against fastpush.

Each test drives one WebPubSubClient in a `node js/client_driver.mjs` process, with the SDK's
default `json.reliable.webpubsub.azure.v1` and with `WebPubSubJsonProtocol()`, and checks each
call by what other clients receive: the SDK client itself (its events), a
`json.webpubsub.azure.v1` test client and a raw WebSocket test client.
The client SDK speaks plain ws:// (only the JS *server* SDK, @azure/web-pubsub, refuses http://).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from tests.compat.client_sdk_common import ROLES, bob_in, group_message
from tests.helpers import client_url, connect

JS_DIR = Path(__file__).parent / "js"
TIMEOUT = 10.0


class JsError(Exception):
    """A rejected client call; `error` holds the JS error's name, message, ackId and errorDetail."""

    def __init__(self, method: str, error: dict):
        super().__init__(f"{method}: {error}")
        self.error = error


def binary(data: bytes) -> dict:
    """Bytes as the driver passes them (an ArrayBuffer in JS)."""
    return {"$bytes": base64.b64encode(data).decode()}


class JsClient:
    """One WebPubSubClient in a node process: calls are awaited here, events queue up here."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.events: asyncio.Queue = asyncio.Queue()
        self.connection_id: str | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def launch(cls, url: str, protocol: str = "reliable", *, credential: bool = False, **options) -> "JsClient":
        if shutil.which("node") is None or not (JS_DIR / "node_modules" / "@azure" / "web-pubsub-client").is_dir():
            pytest.fail(f"node and @azure/web-pubsub-client are needed; run `npm ci` in {JS_DIR}", pytrace=False)
        config = {"url": url, "protocol": protocol, "credential": credential, "options": options}
        process = await asyncio.create_subprocess_exec("node", str(JS_DIR / "client_driver.mjs"), json.dumps(config),
                                                       stdin=PIPE, stdout=PIPE, stderr=PIPE, limit=1 << 20)
        return cls(process)

    async def _read(self) -> None:
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "event" in message:
                self.events.put_nowait((message["event"], message["args"]))
            else:
                self._replies.pop(message["id"]).set_result(message)
        stderr = (await self.process.stderr.read()).decode()
        for reply in self._replies.values():
            reply.set_exception(AssertionError(f"client_driver.mjs exited: {stderr}"))

    async def call(self, method: str, *args):
        """Call `client.<method>(...args)` and return its result (a WebPubSubResult for acked calls)."""
        call_id = next(self._ids)
        self._replies[call_id] = reply = asyncio.get_running_loop().create_future()
        self.process.stdin.write(json.dumps({"id": call_id, "method": method, "args": list(args)}).encode() + b"\n")
        await self.process.stdin.drain()
        result = await asyncio.wait_for(reply, TIMEOUT)
        if not result["ok"]:
            raise JsError(method, result["error"])
        return result["result"]

    async def event(self) -> tuple[str, dict]:
        return await asyncio.wait_for(self.events.get(), TIMEOUT)

    async def message(self) -> tuple[str, ...]:
        """The next server or group message as (group or "server", fromUserId, dataType, data)."""
        kind, args = await self.event()
        message = args["message"]
        data = message["data"]
        if message["dataType"] == "binary":
            data = base64.b64decode(data["$bytes"])
        if kind == "server-message":
            return "server", None, message["dataType"], data
        assert kind == "group-message", (kind, args)
        return message["group"], message.get("fromUserId"), message["dataType"], data

    async def start(self) -> tuple[str, str | None]:
        """start() resolves at the upgrade; the connection id comes with the `connected` event."""
        await self.call("start")
        kind, connected = await self.event()
        assert kind == "connected", (kind, connected)
        self.connection_id = connected["connectionId"]
        return connected["connectionId"], connected.get("userId")

    async def close(self) -> None:
        """End the driver (stdin closed); a client not stopped just loses its socket."""
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), TIMEOUT)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            await self._reader


@pytest.fixture(params=["reliable", "json"])
def protocol(request) -> str:
    return request.param


@pytest.fixture
async def launch():
    """Start JS clients for a test; every driver process ends with it."""
    clients: list[JsClient] = []

    async def start(url: str, protocol: str, **kwargs) -> JsClient:
        client = await JsClient.launch(url, protocol, **kwargs)
        clients.append(client)
        return client

    yield start
    await asyncio.gather(*(client.close() for client in clients))


@pytest.fixture
async def sdk_client(server, hub_name, protocol, launch):
    """Alice's SDK client, started, with the roles to join, leave and send; stopped at the end."""
    client = await launch(client_url(server, hub_name, user_id="alice", roles=ROLES), protocol)
    await client.start()
    yield client
    await client.call("stop")




def acked(result: dict, duplicated: bool = False) -> bool:
    return isinstance(result["ackId"], int) and result["isDuplicated"] is duplicated


async def on_hub(server, hub: str, method: str, *args, **kwargs):
    """Call the embedding API's `method` for `hub` on the server's loop (the API is not thread-safe)."""
    return await server.acall(lambda: getattr(server.server.hub(hub), method)(*args, **kwargs))


async def expect_only_marker(client: JsClient, server, hub: str) -> None:
    """Nothing else is on its way to the SDK client: a marker sent to its connection now is the next message."""
    await on_hub(server, hub, "send_to_connection", client.connection_id, "marker", content_type="text/plain")
    assert await client.message() == ("server", None, "text", "marker")


# --- connecting --------------------------------------------------------------------------------

async def test_start_and_stop(server, hub_name, protocol, launch):
    """start() with a {getClientAccessUrl} credential: `connected` carries the token's user; stop()
    ends the connection on the server (no reliable session lingers) and emits disconnected, then stopped."""
    client = await launch(client_url(server, hub_name, user_id="carol"), protocol, credential=True)
    connection_id, user_id = await client.start()
    assert user_id == "carol"
    assert await on_hub(server, hub_name, "connection_exists", connection_id)

    await client.call("stop")

    kind, disconnected = await client.event()
    assert (kind, disconnected["connectionId"]) == ("disconnected", connection_id)
    assert (await client.event())[0] == "stopped"
    assert not await on_hub(server, hub_name, "connection_exists", connection_id)


# --- groups ------------------------------------------------------------------------------------

async def test_join_send_to_group_and_leave(server, hub_name, sdk_client):
    """Text, JSON and binary sent by the SDK reach a JSON member, a raw member (in the group through
    its token) and, echoed, the SDK itself; after leaveGroup the group's messages stop coming."""
    assert acked(await sdk_client.call("joinGroup", "room"))
    bob = await bob_in(server, hub_name, "room")
    raw = await connect(server, hub_name, groups=["room"])

    assert acked(await sdk_client.call("sendToGroup", "room", "hello", "text"))
    assert await sdk_client.message() == ("room", "alice", "text", "hello")
    assert await bob.recv() == group_message("room", "alice", "text", "hello")
    assert await raw.recv() == "hello"

    assert acked(await sdk_client.call("sendToGroup", "room", {"price": 101.5, "symbol": "ACME"}, "json"))
    assert await sdk_client.message() == ("room", "alice", "json", {"price": 101.5, "symbol": "ACME"})
    assert await bob.recv() == group_message("room", "alice", "json", {"price": 101.5, "symbol": "ACME"})
    assert json.loads(await raw.recv()) == {"price": 101.5, "symbol": "ACME"}

    assert acked(await sdk_client.call("sendToGroup", "room", binary(b"\x00\x01\xfe\xff"), "binary"))
    assert await sdk_client.message() == ("room", "alice", "binary", b"\x00\x01\xfe\xff")
    assert await bob.recv() == group_message("room", "alice", "binary", "AAH+/w==")
    assert await raw.recv() == b"\x00\x01\xfe\xff"

    assert (await bob.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "hi alice",
                               "noEcho": True}))["success"]
    assert await sdk_client.message() == ("room", "bob", "text", "hi alice")
    assert await raw.recv() == "hi alice"

    assert acked(await sdk_client.call("leaveGroup", "room"))
    await bob.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "gone?"})
    assert (await raw.recv(), (await bob.recv())["data"]) == ("gone?", "gone?")
    await expect_only_marker(sdk_client, server, hub_name)


async def test_send_to_group_no_echo(server, hub_name, sdk_client):
    """noEcho: every other member gets the message, the sender does not."""
    await sdk_client.call("joinGroup", "room")
    bob = await bob_in(server, hub_name, "room")

    for data, data_type, wire in (("quiet", "text", "quiet"), ({"n": 1}, "json", {"n": 1}),
                                  (binary(b"\xff"), "binary", "/w==")):
        assert acked(await sdk_client.call("sendToGroup", "room", data, data_type, {"noEcho": True}))
        assert await bob.recv() == group_message("room", "alice", data_type, wire)
    await expect_only_marker(sdk_client, server, hub_name)


async def test_send_to_group_fire_and_forget(server, hub_name, sdk_client):
    """fireAndForget sends no ackId (the result has none); the message still reaches the group."""
    await sdk_client.call("joinGroup", "room")
    bob = await bob_in(server, hub_name, "room")
    result = await sdk_client.call("sendToGroup", "room", "unacked", "text", {"noEcho": True, "fireAndForget": True})
    assert result == {"isDuplicated": False}
    assert await bob.recv() == group_message("room", "alice", "text", "unacked")


async def test_join_without_permission_is_forbidden(server, hub_name, protocol, launch):
    """A token without joinLeaveGroup: the SDK surfaces the server's Forbidden ack (retries off)."""
    client = await launch(client_url(server, hub_name, user_id="mallory"), protocol,
                          messageRetryOptions={"maxRetries": 0})
    await client.start()
    with pytest.raises(JsError) as refused:
        await client.call("joinGroup", "room")
    error = refused.value.error
    assert (error["name"], error["errorDetail"]["name"]) == ("SendMessageError", "Forbidden")
    assert not await on_hub(server, hub_name, "group_exists", "room")


async def test_repeated_ack_id_is_sent_once(server, hub_name, sdk_client):
    """An explicit ackId used twice: the server answers the second with Duplicate, which the SDK
    reports as isDuplicated, and the group gets the message once."""
    await sdk_client.call("joinGroup", "room")
    bob = await bob_in(server, hub_name, "room")
    once = {"noEcho": True, "ackId": 1000}
    assert await sdk_client.call("sendToGroup", "room", "once", "text", once) == {"ackId": 1000, "isDuplicated": False}
    assert await sdk_client.call("sendToGroup", "room", "once", "text", once) == {"ackId": 1000, "isDuplicated": True}
    await sdk_client.call("sendToGroup", "room", "next", "text", {"noEcho": True})
    assert [(await bob.recv())["data"] for _ in range(2)] == ["once", "next"]


# --- events and server messages ----------------------------------------------------------------

async def test_send_event_is_acked(server, hub_name, sdk_client):
    """No event handler is configured: the server acks events (text, JSON, binary) and drops them;
    the connection stays usable."""
    assert acked(await sdk_client.call("sendEvent", "ev-text", "txt", "text"))
    assert acked(await sdk_client.call("sendEvent", "ev-json", {"k": "v"}, "json"))
    assert acked(await sdk_client.call("sendEvent", "ev-binary", binary(b"\xff\x00"), "binary"))
    await sdk_client.call("sendEvent", "ev-unacked", "txt", "text", {"fireAndForget": True})
    await expect_only_marker(sdk_client, server, hub_name)


async def test_server_messages_from_rest_and_embedding(server, hub_name, sdk_client, service):
    """server-message for REST sends (all, user, connection) in every data type, and group-message
    for a group send made through the embedding API."""
    await asyncio.to_thread(service.send_to_all, "to all", content_type="text/plain")
    assert await sdk_client.message() == ("server", None, "text", "to all")
    await asyncio.to_thread(service.send_to_user, "alice", {"to": "alice"})
    assert await sdk_client.message() == ("server", None, "json", {"to": "alice"})
    await asyncio.to_thread(service.send_to_connection, sdk_client.connection_id, b"\x00\xff",
                            content_type="application/octet-stream")
    assert await sdk_client.message() == ("server", None, "binary", b"\x00\xff")

    await sdk_client.call("joinGroup", "prices")
    await on_hub(server, hub_name, "send_to_group", "prices", {"symbol": "ACME", "price": 101.5})
    assert await sdk_client.message() == ("prices", None, "json", {"symbol": "ACME", "price": 101.5})
