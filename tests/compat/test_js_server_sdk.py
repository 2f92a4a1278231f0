"""Every WebPubSubServiceClient method of @azure/web-pubsub, unmodified, against fastpush, on each
version pinned in js/package.json (tests/compat/sdk_versions.py: 1.2.0, the newest, and 1.1.4, the last
of 1.1; test ids `[js-server-<version>]`). A method a version does not have is skipped on it, by name.

Each test starts one `node js/sdk_methods.mjs` process and makes SDK calls through it, then checks
what real subscribers received: a raw WebSocket client and `json.webpubsub.azure.v1` clients.
The JS SDK refuses http:// endpoints, so everything runs against the https `tls_server`
with Node trusting its test CA through NODE_EXTRA_CA_CERTS.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import time
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest
import websockets

from tests import helpers
from tests.compat.sdk_versions import js_server_packages
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, Client

JS_DIR = Path(__file__).parent / "js"
NODE_PACKAGES = tuple(js_server_packages().values())
TIMEOUT = 15.0


class SdkError(Exception):
    """A rejected SDK call; `error` holds the JS error's name, message, statusCode and code."""

    def __init__(self, method: str, error: dict):
        super().__init__(f"{method}: {error}")
        self.error = error


class Sdk:
    """One `node sdk_methods.mjs` process bound to the test's hub: one SDK call per request, in order."""

    def __init__(self, process: asyncio.subprocess.Process, version: str):
        self.process = process
        self.version = version

    async def call(self, method: str, *args, group: str | None = None):
        """Call `service.<method>(...args)`, or `service.group(group).<method>(...)`; return its result."""
        return await self._request({"method": method, "args": list(args)}, method, group)

    async def require(self, method: str, *, group: str | None = None) -> None:
        """Skip the test on an SDK version that does not have the method."""
        if not await self._request({"has": method}, method, group):
            pytest.skip(f"@azure/web-pubsub {self.version} has no {'group.' if group else ''}{method}")

    async def _request(self, request: dict, method: str, group: str | None):
        if group is not None:
            request["group"] = group
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        if not line:
            stderr = await self.process.stderr.read()
            pytest.fail(f"sdk_methods.mjs exited during {method}: {stderr.decode()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise SdkError(method, reply["error"])
        return reply["result"]


def binary(data: bytes) -> dict:
    """An argument the driver turns into a Uint8Array."""
    return {"$bytes": base64.b64encode(data).decode()}


def odata(template: str, *values) -> dict:
    """The SDK's own filter helper: odata("userId eq {}", "u1") is odata`userId eq ${"u1"}`."""
    return {"$odata": {"strings": template.split("{}"), "values": list(values)}}


def text(message: str, **options) -> tuple[str, dict]:
    """Arguments for a text/plain send."""
    return message, {"contentType": "text/plain", **options}


def from_server(data_type: str, data) -> dict:
    return {"type": "message", "from": "server", "dataType": data_type, "data": data}


def from_group(group: str, data_type: str, data) -> dict:
    return {"type": "message", "from": "group", "group": group, "dataType": data_type, "data": data}


async def silent(*clients: Client) -> None:
    """Assert that none of the clients receives anything (checked concurrently, to keep the run short)."""
    await asyncio.gather(*(client.expect_silence() for client in clients))


async def assert_closed(client: Client, reason: str) -> None:
    """A REST close: JSON clients first get `system/disconnected` with the reason, then a 1000 close."""
    if client.subprotocol:
        assert await client.recv() == {"type": "system", "event": "disconnected", "message": reason}
    with pytest.raises(websockets.ConnectionClosedOK) as closed:
        await asyncio.wait_for(client.ws.recv(), TIMEOUT)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, reason)


@pytest.fixture(scope="module")
def node_env(tls_server) -> dict[str, str]:
    """Node's environment, trusting the test CA. Missing Node or packages fails (CI runs `npm ci` first)."""
    missing = [name for name in NODE_PACKAGES if not (JS_DIR / "node_modules" / name).is_dir()]
    if shutil.which("node") is None or missing:
        pytest.fail(f"node and the JS SDKs are needed (missing: {missing or 'node'}); "
                    f"run `npm ci` in {JS_DIR}", pytrace=False)
    return {**os.environ, "NODE_EXTRA_CA_CERTS": str(tls_server.ca_file)}


@pytest.fixture(params=list(js_server_packages().items()), ids=lambda pin: f"js-server-{pin[0]}")
async def sdk(request, tls_server, hub_name, node_env):
    version, package = request.param
    process = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / "sdk_methods.mjs"), tls_server.connection_string, hub_name, package,
        env=node_env, stdin=PIPE, stdout=PIPE, stderr=PIPE)
    yield Sdk(process, version)
    process.stdin.close()  # the driver exits at the end of its input
    try:
        await asyncio.wait_for(process.wait(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise


@pytest.fixture
async def connect(tls_server, hub_name):
    """Open wss test clients in the test's hub; all closed at the end."""
    context = ssl.create_default_context(cafile=tls_server.ca_file)
    clients: list[Client] = []

    async def open_client(subprotocol: str | None = None, *, url: str | None = None, **claims) -> Client:
        client = await helpers.connect(tls_server, hub_name, subprotocol, url=url, ssl=context, **claims)
        clients.append(client)
        return client

    yield open_client
    await asyncio.gather(*(client.close() for client in clients))


# --- sending -----------------------------------------------------------------------------------

async def test_send_to_all_content_types(sdk, connect):
    """The SDK picks the content type from the message; raw clients get the body, JSON clients a typed envelope."""
    raw, js = await connect(), await connect(JSON_V1)

    await sdk.call("sendToAll", *text("Hello World"))
    assert await raw.recv() == "Hello World"
    assert await js.recv() == from_server("text", "Hello World")

    await sdk.call("sendToAll", {"hello": "world", "n": 1})
    assert await raw.recv() == '{"hello":"world","n":1}'
    assert await js.recv() == from_server("json", {"hello": "world", "n": 1})

    await sdk.call("sendToAll", "just a string")  # no content type: JSON-encoded, quotes included
    assert await raw.recv() == '"just a string"'
    assert await js.recv() == from_server("json", "just a string")

    await sdk.call("sendToAll", binary(b"\x00\x01\xfe\xff"))
    assert await raw.recv() == b"\x00\x01\xfe\xff"
    assert await js.recv() == from_server("binary", base64.b64encode(b"\x00\x01\xfe\xff").decode())


async def test_send_to_all_excluded_connections_and_filter(sdk, connect):
    """Filters built with the SDK's odata helper, including its quote escaping and null."""
    u1, quoted, anonymous = (await connect(JSON_V1, user_id="u1"), await connect(JSON_V1, user_id="o'neil"),
                             await connect(JSON_V1))

    await sdk.call("sendToAll", *text("not o'neil", excludedConnections=[quoted.connection_id]))
    assert await u1.recv() == await anonymous.recv() == from_server("text", "not o'neil")
    await silent(quoted)

    await sdk.call("sendToAll", *text("only u1", filter=odata("userId eq {}", "u1")))
    assert await u1.recv() == from_server("text", "only u1")
    await silent(quoted, anonymous)

    await sdk.call("sendToAll", *text("only o'neil", filter=odata("userId eq {}", "o'neil")))
    assert await quoted.recv() == from_server("text", "only o'neil")
    await silent(u1, anonymous)

    await sdk.call("sendToAll", *text("only anonymous", filter=odata("userId eq {}", None)))
    assert await anonymous.recv() == from_server("text", "only anonymous")
    await silent(u1, quoted)


async def test_invalid_filter_is_a_400_rest_error(sdk, connect):
    """A filter the server cannot parse is refused, and the SDK surfaces it as a RestError with status 400."""
    listener = await connect(JSON_V1)
    with pytest.raises(SdkError) as refused:
        await sdk.call("sendToAll", *text("never", filter="userId eq"))
    assert (refused.value.error["name"], refused.value.error["statusCode"]) == ("RestError", 400)
    await silent(listener)


async def test_send_to_user_and_to_connection(sdk, connect):
    first, second, other = (await connect(JSON_V1, user_id="u1"), await connect(JSON_V1, user_id="u1"),
                            await connect(JSON_V1, user_id="u2"))

    await sdk.call("sendToUser", "u1", {"n": 1})
    assert await first.recv() == await second.recv() == from_server("json", {"n": 1})
    await silent(other)

    not_first = odata("connectionId ne {}", first.connection_id)
    await sdk.call("sendToUser", "u1", *text("second only", filter=not_first))
    assert await second.recv() == from_server("text", "second only")
    await silent(first, other)

    await sdk.call("sendToConnection", other.connection_id, *text("just you", messageTtlSeconds=30))
    assert await other.recv() == from_server("text", "just you")
    await silent(first, second)


# --- groups ------------------------------------------------------------------------------------

async def test_group_add_remove_connection_and_user_then_send(sdk, connect):
    """group(...).addConnection/addUser put clients in the group, removeConnection/removeUser take them out."""
    a, b, outsider = (await connect(JSON_V1, user_id="ua"), await connect(JSON_V1, user_id="ub"),
                      await connect(JSON_V1, user_id="uc"))
    assert await sdk.call("groupExists", "room") is False

    await sdk.call("addConnection", a.connection_id, group="room")
    await sdk.call("addUser", "ub", group="room")
    assert await sdk.call("groupExists", "room") is True

    await sdk.call("sendToAll", *text("to room"), group="room")
    assert await a.recv() == await b.recv() == from_group("room", "text", "to room")
    await silent(outsider)

    await sdk.call("sendToAll", {"skip": "a"}, {"excludedConnections": [a.connection_id]}, group="room")
    assert await b.recv() == from_group("room", "json", {"skip": "a"})
    await silent(a, outsider)

    await sdk.call("sendToAll", *text("ua only", filter=odata("userId eq {}", "ua")), group="room")
    assert await a.recv() == from_group("room", "text", "ua only")
    await silent(b, outsider)

    await sdk.call("removeConnection", a.connection_id, group="room")
    await sdk.call("sendToAll", *text("after removeConnection"), group="room")
    assert await b.recv() == from_group("room", "text", "after removeConnection")
    await silent(a)

    await sdk.call("removeUser", "ub", group="room")
    assert await sdk.call("groupExists", "room") is False
    await sdk.call("sendToAll", *text("empty room"), group="room")
    await silent(a, b, outsider)


async def test_remove_connection_and_user_from_all_groups(sdk, connect):
    a, b = await connect(JSON_V1, user_id="ua"), await connect(JSON_V1, user_id="ub")
    for group in ("g1", "g2"):
        await sdk.call("addConnection", a.connection_id, group=group)
        await sdk.call("addUser", "ub", group=group)

    await sdk.call("removeConnectionFromAllGroups", a.connection_id)
    for group in ("g1", "g2"):
        await sdk.call("sendToAll", *text(group), group=group)
        assert await b.recv() == from_group(group, "text", group)
    await silent(a)

    await sdk.call("removeUserFromAllGroups", "ub")
    assert [await sdk.call("groupExists", group) for group in ("g1", "g2")] == [False, False]


async def test_list_connections_follows_pages(sdk, connect):
    """maxPageSize 2 over 5 members: the SDK must follow nextLink and see every member exactly once."""
    await sdk.require("listConnections", group="big")
    members = [await connect(JSON_V1, user_id=f"m{i}") for i in range(5)]
    await connect(JSON_V1, user_id="not-a-member")
    for member in members:
        await sdk.call("addConnection", member.connection_id, group="big")

    pages = await sdk.call("listConnections", {"maxPageSize": 2}, group="big")

    assert [len(page) for page in pages] == [2, 2, 1]
    listed = sorted((m["connectionId"], m.get("userId")) for page in pages for m in page)
    assert listed == sorted((m.connection_id, m.user_id) for m in members)


async def test_add_and_remove_connections_to_groups_by_filter(sdk, connect):
    first, second, other = (await connect(JSON_V1, user_id="u1"), await connect(JSON_V1, user_id="u1"),
                            await connect(JSON_V1, user_id="u2"))

    await sdk.call("addConnectionsToGroups", ["g1", "g2"], odata("userId eq {}", "u1"))
    for group in ("g1", "g2"):
        await sdk.call("sendToAll", *text(group), group=group)
        assert await first.recv() == await second.recv() == from_group(group, "text", group)
    await silent(other)

    await sdk.call("removeConnectionsFromGroups", ["g1"], odata("connectionId eq {}", first.connection_id))
    await sdk.call("sendToAll", *text("g1 again"), group="g1")
    assert await second.recv() == from_group("g1", "text", "g1 again")
    await silent(first, other)
    assert await sdk.call("groupExists", "g2") is True


# --- closing -----------------------------------------------------------------------------------

async def test_close_connection_with_reason(sdk, connect):
    target, bystander = await connect(JSON_V1), await connect(JSON_V1)
    assert await sdk.call("connectionExists", target.connection_id) is True

    await sdk.call("closeConnection", target.connection_id, {"reason": "bye now"})

    await assert_closed(target, "bye now")
    await silent(bystander)
    assert await sdk.call("connectionExists", target.connection_id) is False


async def test_close_user_group_and_all_connections_with_exclusions(sdk, connect):
    keeper = await connect(JSON_V1, user_id="u1")
    user_mate, grouped, plain = (await connect(JSON_V1, user_id="u1"), await connect(JSON_V1, user_id="u2"),
                                 await connect(JSON_V1, user_id="u3"))
    raw = await connect()
    for client in (keeper, grouped):
        await sdk.call("addConnection", client.connection_id, group="room")
    spare = {"excluded": [keeper.connection_id]}

    await sdk.call("closeUserConnections", "u1", {**spare, "reason": "user"})
    await assert_closed(user_mate, "user")

    await sdk.call("closeAllConnections", {**spare, "reason": "room"}, group="room")
    await assert_closed(grouped, "room")

    await sdk.call("closeAllConnections", {**spare, "reason": "all"})
    await assert_closed(plain, "all")
    await assert_closed(raw, "all")

    await silent(keeper)
    assert await sdk.call("connectionExists", keeper.connection_id) is True


# --- existence and permissions -----------------------------------------------------------------

async def test_exists_checks(sdk, connect):
    client = await connect(JSON_V1, user_id="present")
    assert await sdk.call("connectionExists", client.connection_id) is True
    assert await sdk.call("connectionExists", "no-such-connection") is False
    assert await sdk.call("userExists", "present") is True
    assert await sdk.call("userExists", "absent") is False
    assert await sdk.call("groupExists", "lobby") is False
    await sdk.call("addConnection", client.connection_id, group="lobby")
    assert await sdk.call("groupExists", "lobby") is True


async def test_grant_revoke_and_has_permission(sdk, connect):
    """Permissions granted over REST decide what a JSON client may do, with and without targetName."""
    client = await connect(JSON_V1)
    cid = client.connection_id

    async def may(request: dict) -> bool:
        ack = await client.request(request)
        assert ack["success"] or ack["error"]["name"] == "Forbidden", ack
        return ack["success"]

    join_lobby = {"type": "joinGroup", "group": "lobby"}
    send_lobby = {"type": "sendToGroup", "group": "lobby", "noEcho": True, "dataType": "text", "data": "hi"}
    lobby = {"targetName": "lobby"}
    assert await sdk.call("hasPermission", cid, "joinLeaveGroup", lobby) is False
    assert not await may(join_lobby)

    await sdk.call("grantPermission", cid, "joinLeaveGroup", lobby)
    assert await sdk.call("hasPermission", cid, "joinLeaveGroup", lobby) is True
    assert await sdk.call("hasPermission", cid, "joinLeaveGroup", {"targetName": "elsewhere"}) is False
    assert await may(join_lobby)
    assert not await may({"type": "joinGroup", "group": "elsewhere"})

    await sdk.call("grantPermission", cid, "sendToGroup")  # no targetName: every group
    assert await sdk.call("hasPermission", cid, "sendToGroup") is True
    assert await sdk.call("hasPermission", cid, "sendToGroup", {"targetName": "any"}) is True
    assert await may(send_lobby)

    await sdk.call("revokePermission", cid, "joinLeaveGroup", lobby)
    assert await sdk.call("hasPermission", cid, "joinLeaveGroup", lobby) is False
    assert not await may({"type": "leaveGroup", "group": "lobby"})

    await sdk.call("revokePermission", cid, "sendToGroup")
    assert await sdk.call("hasPermission", cid, "sendToGroup") is False
    assert not await may(send_lobby)


# --- client access tokens ----------------------------------------------------------------------

async def test_client_access_token_claims_take_effect(sdk, connect, tls_server, hub_name):
    """getClientAccessToken is computed locally by the SDK; its userId, roles and groups must all work here."""
    token = await sdk.call("getClientAccessToken", {
        "userId": "alice", "groups": ["news"],
        "roles": ["webpubsub.joinLeaveGroup.chat", "webpubsub.sendToGroup.chat"]})
    assert token["baseUrl"] == f"wss://{tls_server.endpoint.split('://', 1)[1]}/client/hubs/{hub_name}"
    assert token["url"] == f"{token['baseUrl']}?access_token={token['token']}"

    alice = await connect(JSON_V1, url=token["url"])
    assert alice.user_id == "alice"

    await sdk.call("sendToAll", *text("headline"), group="news")
    assert await alice.recv() == from_group("news", "text", "headline")

    assert (await alice.request({"type": "joinGroup", "group": "chat"}))["success"]
    send_chat = {"type": "sendToGroup", "group": "chat", "dataType": "text", "data": "me"}
    assert (await alice.request(send_chat))["success"]
    echo = await alice.recv()
    assert (echo["group"], echo["fromUserId"], echo["data"]) == ("chat", "alice", "me")
    assert not (await alice.request({"type": "joinGroup", "group": "other"}))["success"]

    anonymous = await connect(url=(await sdk.call("getClientAccessToken"))["url"])
    await sdk.call("sendToAll", *text("to everyone"))
    assert await anonymous.recv() == "to everyone"


# --- messageTtlSeconds -------------------------------------------------------------------------

async def test_message_ttl_seconds_expires_what_waits_for_a_client_that_is_away(sdk, connect, tls_server, hub_name):
    """The SDK's messageTtlSeconds option on a group send: a reliable client whose socket dropped
    recovers what was sent meanwhile, but not what expired before it came back, and its
    sequenceIds have no gap."""
    client = await connect(JSON_RELIABLE_V1, groups=["ticker"])
    await sdk.call("sendToAll", *text("one"), group="ticker")
    assert (await client.recv())["sequenceId"] == 1
    token = client.reconnection_token
    client.ws.transport.abort()  # the network drops it: no close frame
    hub = tls_server.server.node.hub(hub_name)
    assert await helpers.eventually(lambda: tls_server.acall(lambda: hub.connection(client.connection_id).is_lost))

    await sdk.call("sendToAll", *text("stale", messageTtlSeconds=1), group="ticker")
    expired = time.time() + 1
    await sdk.call("sendToAll", *text("two"), group="ticker")
    await asyncio.sleep(max(0.0, expired - time.time()) + 0.05)
    await sdk.call("sendToAll", *text("three", messageTtlSeconds=300), group="ticker")

    again = await connect(JSON_RELIABLE_V1, url=helpers.client_url(tls_server, hub_name)
                          + f"&awps_connection_id={client.connection_id}&awps_reconnection_token={token}")
    assert again.connection_id == client.connection_id
    resent = [await again.recv() for _ in range(3)]  # "one" too: it was never acknowledged
    assert [(m["sequenceId"], m["data"]) for m in resent] == [(1, "one"), (2, "two"), (3, "three")]
    await silent(again)


@pytest.mark.parametrize("ttl", [301, -1])
async def test_a_message_ttl_outside_0_to_300_is_refused_with_400(sdk, ttl):
    with pytest.raises(SdkError) as refused:
        await sdk.call("sendToAll", *text("x", messageTtlSeconds=ttl))
    assert refused.value.error["statusCode"] == 400
