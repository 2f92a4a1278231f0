"""@azure/web-pubsub-client 1.1.0's group streams, unmodified, through fastpush: one client streams
with `openGroupStream` (write, end, abort), another reads it with `onGroupStream`, and raw, JSON and
protobuf watchers in the group see what fastpush documents (README, "client protocol"): JSON members
every fragment and the end with `stream`, raw and protobuf members the fragments' data alone.
"""
from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.compat.conftest import JS_1_1_DRIVERS, js_driver_fixture
from tests.compat.drivers import SdkCallError
from tests.compat.drivers.js_client import _to_js
from tests.fault_proxy import FaultProxy
from tests.helpers import JSON_V1, client_url, connect
from tests.webpubsub_proto import Downstream

SEND = ["webpubsub.sendToGroup"]
PROTOBUF_V1 = "protobuf.webpubsub.azure.v1"

js_driver = js_driver_fixture(JS_1_1_DRIVERS)


async def next_event(client, kind: str, timeout: float = 10.0):
    """The next event of `kind`, skipping the others (the receiver's group-message events too)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        event = await client.event(max(0.01, deadline - asyncio.get_running_loop().time()))
        if event.kind == kind:
            return event.details


async def protobuf_watcher(server, hub: str):
    ws = await websockets.connect(client_url(server, hub, groups=["room"]), subprotocols=[PROTOBUF_V1])
    assert Downstream.FromString(await ws.recv()).HasField("system_message")
    return ws


async def test_a_stream_reaches_on_group_stream_and_every_kind_of_member(started, server, hub_name):
    receiver = await started(user_id="bob", groups=["room"])
    await receiver._call("onGroupStream", {"groupNames": ["room"]})
    json_watcher = await connect(server, hub_name, JSON_V1, groups=["room"])
    raw_watcher = await connect(server, hub_name, groups=["room"])
    pb_watcher = await protobuf_watcher(server, hub_name)
    publisher = await started(user_id="ann", roles=SEND)

    opened = await publisher._call("openGroupStream", "room", {"idleTimeoutInMs": 20000})
    stream_id = opened["streamId"]
    await publisher._call("streamWrite", stream_id, "a", "text")
    await publisher._call("streamWrite", stream_id, {"k": 1}, "json")
    await publisher._call("streamWrite", stream_id, _to_js(b"\x00\x01"), "binary")
    await publisher._call("streamEnd", stream_id)

    assert await next_event(receiver, "stream-opened") == {"group": "room", "streamId": stream_id}
    got = [await next_event(receiver, "stream-message") for _ in range(3)]
    assert [(m["dataType"], m["data"]) for m in got] == [("text", "a"), ("json", {"k": 1}),
                                                         ("binary", {"$bytes": "AAE="})]
    assert [m["stream"]["streamSequenceId"] for m in got] == [1, 2, 3]
    assert (await next_event(receiver, "stream-ended"))["error"] is None

    messages = [await json_watcher.recv() for _ in range(4)]
    assert [m["stream"] for m in messages] == [
        {"streamId": stream_id, "streamSequenceId": 1, "endOfStream": False},
        {"streamId": stream_id, "streamSequenceId": 2, "endOfStream": False},
        {"streamId": stream_id, "streamSequenceId": 3, "endOfStream": False},
        {"streamId": stream_id, "streamSequenceId": 4, "endOfStream": True}]
    assert {m["fromUserId"] for m in messages} == {"ann"}
    assert (messages[3]["dataType"], messages[3]["data"]) == ("text", "")
    assert [await raw_watcher.recv() for _ in range(3)] == ["a", '{"k":1}', b"\x00\x01"]
    pb = [Downstream.FromString(await pb_watcher.recv()).data_message for _ in range(3)]
    assert [(m.group, m.data.WhichOneof("data")) for m in pb] == [("room", "text_data"), ("room", "text_data"),
                                                                  ("room", "binary_data")]
    assert pb[2].data.binary_data == b"\x00\x01"
    await raw_watcher.expect_silence(0.2)  # the end is the JSON family's alone
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pb_watcher.recv(), 0.2)
    await pb_watcher.close()


async def test_an_aborted_stream_ends_with_the_publishers_user_error(started, server, hub_name):
    receiver = await started(user_id="bob", groups=["room"])
    await receiver._call("onGroupStream")
    publisher = await started(user_id="ann", roles=SEND)
    stream_id = (await publisher._call("openGroupStream", "room"))["streamId"]
    await publisher._call("streamWrite", stream_id, "part", "text")
    await publisher._call("streamAbort", stream_id, {"message": "model failed", "userErrorCode": "E42"})
    assert (await next_event(receiver, "stream-message"))["data"] == "part"
    ended = await next_event(receiver, "stream-ended")
    assert ended["error"] == {"name": "UserError", "message": "model failed", "userErrorCode": "E42"}


async def test_a_stalled_stream_is_closed_with_idle_timeout_for_both_sides(started, server, hub_name):
    receiver = await started(user_id="bob", groups=["room"])
    await receiver._call("onGroupStream")
    publisher = await started(user_id="ann", roles=SEND)
    stream_id = (await publisher._call("openGroupStream", "room", {"idleTimeoutInMs": 300}))["streamId"]
    await publisher._call("streamWrite", stream_id, "only", "text")
    failed = await next_event(publisher, "stream-error")
    assert (failed["streamId"], failed["name"]) == (stream_id, "IdleTimeout")
    ended = await next_event(receiver, "stream-ended")
    assert ended["error"]["name"] == "IdleTimeout"
    with pytest.raises(SdkCallError):  # the SDK forgot the stream: it is completed
        await publisher._call("streamWrite", stream_id, "late", "text")


async def test_a_stream_without_the_send_role_is_forbidden(started):
    client = await started(user_id="ann", roles=["webpubsub.joinLeaveGroup"])
    with pytest.raises(SdkCallError) as failed:
        await client._call("openGroupStream", "room")
    assert failed.value.name == "Forbidden"


async def test_a_stream_to_one_group_needs_that_groups_role(started):
    client = await started(user_id="ann", roles=["webpubsub.sendToGroup.other"])
    with pytest.raises(SdkCallError) as failed:
        await client._call("openGroupStream", "room")
    assert failed.value.name == "Forbidden"
    opened = await client._call("openGroupStream", "other")
    await client._call("streamEnd", opened["streamId"])


async def test_the_publisher_with_no_echo_hears_nothing_of_its_stream(started, server, hub_name):
    publisher = await started(user_id="ann", roles=[*SEND, "webpubsub.joinLeaveGroup"])
    await publisher.join_group("room")
    await publisher._call("onGroupStream")
    watcher = await connect(server, hub_name, JSON_V1, groups=["room"])
    stream_id = (await publisher._call("openGroupStream", "room", {"noEcho": True}))["streamId"]
    await publisher._call("streamWrite", stream_id, "x", "text")
    await publisher._call("streamEnd", stream_id)
    assert [(await watcher.recv())["stream"]["endOfStream"] for _ in range(2)] == [False, True]
    await asyncio.sleep(0.2)
    kinds = []
    while not publisher.events.empty():
        kinds.append(publisher.events.get_nowait().kind)
    assert "stream-opened" not in kinds and "group-message" not in kinds



# --- a publisher whose connection drops ---------------------------------------------------------------------
@pytest.fixture
async def proxy(server):
    proxy = await FaultProxy(server.port).start()
    yield proxy
    await proxy.stop()


async def test_a_reliable_publishers_stream_goes_on_after_its_recovery(started, js_driver, server, hub_name, proxy):
    """The cut connection is recovered (reliable protocol); the SDK resends whatever fragment it saw no
    ack for, fastpush takes those as duplicates, and the receiver gets each fragment once, in order."""
    receiver = await started(user_id="bob", groups=["room"])
    await receiver._call("onGroupStream")
    url = client_url(server, hub_name, user_id="ann", roles=SEND).replace(f":{server.port}/", f":{proxy.port}/")
    publisher = await js_driver.client(url, "reliable")
    try:
        await publisher.start()
        stream_id = (await publisher._call("openGroupStream", "room"))["streamId"]
        for text in ("a", "b"):
            await publisher._call("streamWrite", stream_id, text, "text")
        got = [await next_event(receiver, "stream-message") for _ in range(2)]
        proxy.cut()
        assert await proxy.wait_connected(asyncio.get_running_loop().time() + 30, accepted=2)
        await publisher._call("streamWrite", stream_id, "c", "text")
        await publisher._call("streamEnd", stream_id)
        got.append(await next_event(receiver, "stream-message"))
        assert [(m["data"], m["stream"]["streamSequenceId"]) for m in got] == [("a", 1), ("b", 2), ("c", 3)]
        assert (await next_event(receiver, "stream-ended"))["error"] is None
        kinds = [publisher.events.get_nowait().kind for _ in range(publisher.events.qsize())]
        assert "stream-error" not in kinds and "disconnected" not in kinds
    finally:
        await publisher.dispose()


async def test_a_plain_json_publishers_dropped_connection_cancels_its_stream(started, js_driver, server, hub_name,
                                                                              proxy):
    """Without recovery the stream cannot go on: the SDK fails it, and the group gets its end with
    `Cancelled` once the session is gone."""
    receiver = await started(user_id="bob", groups=["room"])
    await receiver._call("onGroupStream")
    url = client_url(server, hub_name, user_id="ann", roles=SEND).replace(f":{server.port}/", f":{proxy.port}/")
    publisher = await js_driver.client(url, "json")
    try:
        await publisher.start()
        stream_id = (await publisher._call("openGroupStream", "room"))["streamId"]
        await publisher._call("streamWrite", stream_id, "a", "text")
        assert (await next_event(receiver, "stream-message"))["data"] == "a"
        proxy.cut()
        ended = await next_event(receiver, "stream-ended")
        assert ended["error"]["name"] == "Cancelled"
        assert (await next_event(publisher, "stream-error"))["streamId"] == stream_id
    finally:
        await publisher.dispose()
