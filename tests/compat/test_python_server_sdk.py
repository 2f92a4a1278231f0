"""Every method of the Python server SDK (azure-messaging-webpubsubservice), each checked by what
real subscribers (raw and json.webpubsub.azure.v1) receive, or by the value it returns.

Each scenario runs on every version tests/compat/sdk_versions.py lists (test ids `[python-server-<version>]`):
the environment's (1.3.0) in this process, an older one (1.2.2) in a subprocess of its own
(drivers/python_server.py). A method a version does not have is skipped on it, by name."""
from __future__ import annotations

import asyncio

import jwt
import pytest
import websockets
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.compat.drivers.python_server import SdkHost, SubprocessServiceClient
from tests.compat.sdk_versions import python_server_versions
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, connect

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture
def server(deployment):
    """Every test runs on one node and across three (tests/compat/conftest.py: deployment)."""
    return deployment


@pytest.fixture(scope="module")
def hosts():
    """{version: the SdkHost of that version}, each started by its first test and ended with the module."""
    started: dict[str, SdkHost] = {}
    yield started
    for host in started.values():
        host.close()


@pytest.fixture(params=list(python_server_versions().items()), ids=lambda pin: f"python-server-{pin[0]}")
def sdk(request, server, hub_name, hosts):
    version, sdk_dir = request.param
    if sdk_dir is None:
        return WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub_name)
    if version not in hosts:
        if not sdk_dir.is_dir():
            pytest.fail(f"azure-messaging-webpubsubservice {version} is not installed in {sdk_dir}: "
                        f"run `python3 -m tests.compat.install_sdks`", pytrace=False)
        hosts[version] = SdkHost(sdk_dir)
        assert hosts[version].version == version
    return SubprocessServiceClient(hosts[version], server.connection_string, hub_name)


def require(sdk, method: str) -> None:
    """Skip the test on an SDK version that does not have the method."""
    if not hasattr(sdk, method):
        pytest.skip(f"azure-messaging-webpubsubservice {getattr(sdk, 'version', '')} has no {method}")


def run(fn, *args, **kwargs):
    """SDK calls are blocking: run them off the test's event loop."""
    return asyncio.to_thread(fn, *args, **kwargs)


async def test_send_to_all_text_json_binary(server, hub_name, sdk):
    raw = await connect(server, hub_name)
    js = await connect(server, hub_name, JSON_V1)
    await run(sdk.send_to_all, "Hello World", content_type="text/plain")
    await run(sdk.send_to_all, {"hello": "world", "n": 1})
    await run(sdk.send_to_all, "just a string")
    await run(sdk.send_to_all, b"\x00\x01\x02\xff", content_type="application/octet-stream")
    assert await raw.recv() == "Hello World"
    assert await raw.recv() == '{"hello": "world", "n": 1}'
    assert await raw.recv() == '"just a string"'
    assert await raw.recv() == b"\x00\x01\x02\xff"
    assert await js.recv() == {"type": "message", "from": "server", "dataType": "text", "data": "Hello World"}
    assert await js.recv() == {"type": "message", "from": "server", "dataType": "json",
                               "data": {"hello": "world", "n": 1}}
    assert await js.recv() == {"type": "message", "from": "server", "dataType": "json", "data": "just a string"}
    assert await js.recv() == {"type": "message", "from": "server", "dataType": "binary", "data": "AAEC/w=="}


async def test_reliable_clients_get_increasing_sequence_ids(server, hub_name, sdk):
    rel = await connect(server, hub_name, JSON_RELIABLE_V1)
    for text in ("a", "b", "c"):
        await run(sdk.send_to_all, text, content_type="text/plain")
    got = [await rel.recv() for _ in range(3)]
    assert [m["sequenceId"] for m in got] == [1, 2, 3]
    assert [m["data"] for m in got] == ["a", "b", "c"]


async def test_send_to_all_excluded_and_filter(server, hub_name, sdk):
    a = await connect(server, hub_name, JSON_V1, user_id="alice")
    b = await connect(server, hub_name, JSON_V1, user_id="bob", groups=["g1"])
    c = await connect(server, hub_name, JSON_V1)
    await run(sdk.send_to_all, "not to a", content_type="text/plain", excluded=[a.connection_id])
    assert (await b.recv())["data"] == "not to a"
    assert (await c.recv())["data"] == "not to a"
    await run(sdk.send_to_all, "filtered", content_type="text/plain", filter="userId ne 'alice' and 'g1' in groups")
    assert (await b.recv())["data"] == "filtered"
    await run(sdk.send_to_all, "anonymous", content_type="text/plain", filter="userId eq null")
    assert (await c.recv())["data"] == "anonymous"
    await a.expect_silence()
    await b.expect_silence(0.05)
    await c.expect_silence(0.05)


async def test_send_to_group_user_connection(server, hub_name, sdk):
    member = await connect(server, hub_name, JSON_V1, user_id="u1", groups=["room"])
    raw_member = await connect(server, hub_name, groups=["room"])
    other = await connect(server, hub_name, JSON_V1, user_id="u2")
    await run(sdk.send_to_group, "room", {"price": 101.5}, excluded=[other.connection_id])
    assert await member.recv() == {"type": "message", "from": "group", "group": "room", "dataType": "json",
                                   "data": {"price": 101.5}}
    assert await raw_member.recv() == '{"price": 101.5}'
    await run(sdk.send_to_group, "room", "filtered", content_type="text/plain", filter="userId eq 'u1'")
    assert (await member.recv())["data"] == "filtered"
    await run(sdk.send_to_user, "u2", "for u2", content_type="text/plain")
    assert await other.recv() == {"type": "message", "from": "server", "dataType": "text", "data": "for u2"}
    await run(sdk.send_to_connection, member.connection_id, "just you", content_type="text/plain")
    assert (await member.recv())["data"] == "just you"
    await raw_member.expect_silence()
    await other.expect_silence(0.05)


async def test_sends_to_nobody_are_accepted(sdk):
    await run(sdk.send_to_group, "empty", "x", content_type="text/plain")
    await run(sdk.send_to_user, "nobody", "x", content_type="text/plain")
    await run(sdk.send_to_connection, "no-such-connection", "x", content_type="text/plain")


async def test_connection_groups(server, hub_name, sdk):
    c = await connect(server, hub_name, JSON_V1)
    assert not await run(sdk.group_exists, "g")
    await run(sdk.add_connection_to_group, "g", c.connection_id)
    assert await run(sdk.group_exists, "g")
    await run(sdk.send_to_group, "g", "in g", content_type="text/plain")
    assert (await c.recv())["group"] == "g"
    await run(sdk.remove_connection_from_group, "g", c.connection_id)
    assert not await run(sdk.group_exists, "g")
    await run(sdk.add_connection_to_group, "g1", c.connection_id)
    await run(sdk.add_connection_to_group, "g2", c.connection_id)
    await run(sdk.remove_connection_from_all_groups, c.connection_id)
    assert not await run(sdk.group_exists, "g1") and not await run(sdk.group_exists, "g2")
    with pytest.raises(ResourceNotFoundError):
        await run(sdk.add_connection_to_group, "g", "no-such-connection")


async def test_user_groups_apply_to_current_and_future_connections(server, hub_name, sdk):
    first = await connect(server, hub_name, JSON_V1, user_id="carol")
    await run(sdk.add_user_to_group, "vip", "carol")
    second = await connect(server, hub_name, JSON_V1, user_id="carol")
    await run(sdk.send_to_group, "vip", "hi vip", content_type="text/plain")
    assert (await first.recv())["data"] == "hi vip"
    assert (await second.recv())["data"] == "hi vip"
    await run(sdk.remove_user_from_group, "vip", "carol")
    assert not await run(sdk.group_exists, "vip")
    await run(sdk.add_user_to_group, "a", "carol")
    await run(sdk.add_user_to_group, "b", "carol")
    await run(sdk.remove_user_from_all_groups, "carol")
    third = await connect(server, hub_name, JSON_V1, user_id="carol")
    await run(sdk.send_to_group, "a", "nobody", content_type="text/plain")
    for client in (first, second, third):
        await client.expect_silence(0.1)


async def test_exists_checks(server, hub_name, sdk):
    c = await connect(server, hub_name, JSON_V1, user_id="dave")
    assert await run(sdk.connection_exists, c.connection_id)
    assert await run(sdk.user_exists, "dave")
    assert not await run(sdk.user_exists, "erin")
    assert not await run(sdk.connection_exists, "nope")
    await c.close()
    for _ in range(100):
        if not await run(sdk.connection_exists, c.connection_id):
            break
        await asyncio.sleep(0.02)
    assert not await run(sdk.connection_exists, c.connection_id)
    assert not await run(sdk.user_exists, "dave")


async def test_close_connection_with_reason(server, hub_name, sdk):
    js = await connect(server, hub_name, JSON_V1)
    await run(sdk.close_connection, js.connection_id, reason="bye now")
    assert await js.recv() == {"type": "system", "event": "disconnected", "message": "bye now"}
    with pytest.raises(websockets.ConnectionClosedOK) as closed:
        await js.ws.recv()
    assert closed.value.rcvd.code == 1000 and closed.value.rcvd.reason == "bye now"


async def test_close_all_group_user(server, hub_name, sdk):
    keep = await connect(server, hub_name, JSON_V1, user_id="keep", groups=["g"])
    in_group = await connect(server, hub_name, groups=["g"])
    user = await connect(server, hub_name, JSON_V1, user_id="leaver")
    await run(sdk.close_group_connections, "g", excluded=[keep.connection_id], reason="group closed")
    with pytest.raises(websockets.ConnectionClosedOK) as closed:
        await in_group.ws.recv()
    assert closed.value.rcvd.code == 1000 and closed.value.rcvd.reason == "group closed"
    await run(sdk.close_user_connections, "leaver", reason="user closed")
    assert (await user.recv())["message"] == "user closed"
    await run(sdk.close_all_connections, excluded=[keep.connection_id], reason="maintenance")
    await keep.expect_silence()
    await run(sdk.close_all_connections, reason="maintenance")
    assert await keep.recv() == {"type": "system", "event": "disconnected", "message": "maintenance"}


async def test_permissions(server, hub_name, sdk):
    c = await connect(server, hub_name, JSON_V1)
    cid = c.connection_id
    assert not await run(sdk.has_permission, "joinLeaveGroup", cid)
    assert (await c.request({"type": "joinGroup", "group": "g"}))["error"]["name"] == "Forbidden"
    await run(sdk.grant_permission, "joinLeaveGroup", cid, target_name="g")
    assert await run(sdk.has_permission, "joinLeaveGroup", cid, target_name="g")
    assert not await run(sdk.has_permission, "joinLeaveGroup", cid, target_name="other")
    assert (await c.request({"type": "joinGroup", "group": "g"}))["success"] is True
    await run(sdk.grant_permission, "sendToGroup", cid)
    assert await run(sdk.has_permission, "sendToGroup", cid)
    assert await run(sdk.has_permission, "sendToGroup", cid, target_name="any")
    ack = await c.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x", "noEcho": True})
    assert ack["success"]
    await run(sdk.revoke_permission, "sendToGroup", cid)
    assert not await run(sdk.has_permission, "sendToGroup", cid)
    ack = await c.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x"})
    assert ack["error"]["name"] == "Forbidden"
    await run(sdk.revoke_permission, "joinLeaveGroup", cid, target_name="g")
    assert not await run(sdk.has_permission, "joinLeaveGroup", cid, target_name="g")
    with pytest.raises(HttpResponseError) as bad:
        await run(sdk.grant_permission, "fly", cid)
    assert bad.value.status_code == 400


async def test_list_connections_pages(server, hub_name, sdk):
    require(sdk, "list_connections")
    clients = [await connect(server, hub_name, JSON_V1, user_id=f"u{i}", groups=["listed"]) for i in range(5)]
    members = await run(lambda: list(sdk.list_connections(group="listed", top=None)))
    assert sorted(m.connection_id for m in members) == sorted(c.connection_id for c in clients)
    assert {m.user_id for m in members} == {f"u{i}" for i in range(5)}
    first_two = await run(lambda: list(sdk.list_connections(group="listed", top=2)))
    assert len(first_two) == 2
    paged = await run(lambda: list(sdk.list_connections(group="listed", maxpagesize=2)))
    assert sorted(m.connection_id for m in paged) == sorted(c.connection_id for c in clients)
    assert await run(lambda: list(sdk.list_connections(group="empty-group"))) == []


async def test_get_client_access_token(server, hub_name, sdk):
    token = await run(sdk.get_client_access_token, user_id="frank", roles=ROLES, groups=["news"], minutes_to_expire=5)
    claims = jwt.decode(token["token"], options={"verify_signature": False})
    assert claims["sub"] == "frank"
    ws = await websockets.connect(token["url"], subprotocols=[JSON_V1])
    try:
        hello = await ws.recv()
        assert '"userId":"frank"' in hello
        await run(sdk.send_to_group, "news", "headline", content_type="text/plain")
        assert '"data":"headline"' in await ws.recv()
    finally:
        await ws.close()
