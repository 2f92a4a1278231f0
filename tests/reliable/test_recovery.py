"""json.reliable.webpubsub.azure.v1 spoken by hand: sequence ids, acks, recovery, refusals."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

import fastpush
from tests.helpers import JSON_RELIABLE_V1, ServerView, client_url, connect, eventually


@pytest.fixture
async def srv():
    async with fastpush.Server(port=0, recovery_window_seconds=5, replay_max_messages=20) as server:
        yield ServerView.of(server)


async def _reliable(srv, hub="h", **claims):
    client = await connect(srv, hub, JSON_RELIABLE_V1, **claims)
    return client


def _dropped(server: fastpush.Server, hub: str, connection_id: str) -> bool:
    """Whether the server has seen the connection's socket go (its session may live on)."""
    conn = server.node.hub(hub).tables.connections.get(connection_id)
    return conn is None or conn.transport is None or conn.transport.is_disconnected


def _recovery_url(srv, hub, connection_id, token):
    return client_url(srv, hub) + f"&awps_connection_id={connection_id}&awps_reconnection_token={token}"


async def _hello(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_recovery_resends_unacknowledged_in_order(srv):
    ws = await websockets.connect(client_url(srv, "h", groups=["g"]), subprotocols=[JSON_RELIABLE_V1])
    hello = await _hello(ws)
    cid, token = hello["connectionId"], hello["reconnectionToken"]
    hub = srv.server.hub("h")
    for i in range(1, 4):
        await hub.send_to_group("g", f"m{i}", content_type="text/plain")
    got = [json.loads(await ws.recv()) for _ in range(3)]
    assert [(m["sequenceId"], m["data"]) for m in got] == [(1, "m1"), (2, "m2"), (3, "m3")]
    await ws.send(json.dumps({"type": "sequenceAck", "sequenceId": 2}))
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await ws.recv()) == {"type": "pong"}  # so the ack before it has been applied
    ws.transport.abort()  # the network drops: no close frame
    assert await eventually(lambda: _dropped(srv.server, "h", cid), 5)
    assert await hub.connection_exists(cid)  # the server saw the drop; the session waits for its client
    await hub.send_to_group("g", "m4", content_type="text/plain")  # sent while away: kept, not dropped
    await hub.send_to_connection(cid, {"direct": True})

    ws2 = await websockets.connect(_recovery_url(srv, "h", cid, token), subprotocols=[JSON_RELIABLE_V1])
    hello2 = await _hello(ws2)
    assert hello2["connectionId"] == cid and hello2["reconnectionToken"] != token
    resent = [json.loads(await ws2.recv()) for _ in range(3)]
    assert [(m["sequenceId"], m["data"]) for m in resent] == [(3, "m3"), (4, "m4"), (5, {"direct": True})]
    await hub.send_to_group("g", "m6", content_type="text/plain")  # groups survive recovery
    assert json.loads(await ws2.recv())["sequenceId"] == 6
    await ws2.close()


async def test_recovery_before_the_server_noticed_the_drop(srv):
    """The client may come back while the old socket still looks open: the new one takes over."""
    ws = await websockets.connect(client_url(srv, "h"), subprotocols=[JSON_RELIABLE_V1])
    hello = await _hello(ws)
    ws2 = await websockets.connect(_recovery_url(srv, "h", hello["connectionId"], hello["reconnectionToken"]),
                                   subprotocols=[JSON_RELIABLE_V1])
    assert (await _hello(ws2))["connectionId"] == hello["connectionId"]
    await srv.server.hub("h").send_to_connection(hello["connectionId"], "to the new socket", content_type="text/plain")
    assert json.loads(await ws2.recv())["data"] == "to the new socket"
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    await ws2.close()


@pytest.mark.parametrize("case", ["bad-token", "unknown-session", "closed-by-client", "closed-by-server"])
async def test_unrecoverable_sessions_close_1008(srv, case):
    ws = await websockets.connect(client_url(srv, "h"), subprotocols=[JSON_RELIABLE_V1])
    hello = await _hello(ws)
    cid, token = hello["connectionId"], hello["reconnectionToken"]
    if case == "bad-token":
        token = "forged"
    elif case == "unknown-session":
        cid = "no-such-connection"
    elif case == "closed-by-client":
        await ws.close()
    else:
        await srv.server.hub("h").close_connection(cid, reason="go away")
    if case in ("bad-token", "unknown-session"):
        ws.transport.abort()
    await asyncio.sleep(0.05)
    ws2 = await websockets.connect(_recovery_url(srv, "h", cid, token), subprotocols=[JSON_RELIABLE_V1])
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws2.recv(), 5)
    assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason


async def test_session_expires_after_the_window():
    """Kept for the whole window after the drop (a lower bound on time, which load only lengthens),
    then gone."""
    window = 0.5
    async with fastpush.Server(port=0, recovery_window_seconds=window) as server:
        srv = ServerView.of(server)
        ws = await websockets.connect(client_url(srv, "h"), subprotocols=[JSON_RELIABLE_V1])
        cid = (await _hello(ws))["connectionId"]
        ws.transport.abort()
        dropped = time.monotonic()
        async def gone() -> bool:
            return not await server.hub("h").connection_exists(cid)
        assert await eventually(gone, 10)
        assert time.monotonic() - dropped >= window


async def test_buffer_overflow_closes_1008_and_cannot_recover(srv):
    ws = await websockets.connect(client_url(srv, "h"), subprotocols=[JSON_RELIABLE_V1])
    hello = await _hello(ws)
    hub = srv.server.hub("h")
    for i in range(21):  # limit is 20 unacknowledged messages; the client never acks
        await hub.send_to_all(f"m{i}", content_type="text/plain")
    for _ in range(20):
        await ws.recv()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 1008 and "buffer" in closed.value.rcvd.reason
    ws2 = await websockets.connect(_recovery_url(srv, "h", hello["connectionId"], hello["reconnectionToken"]),
                                   subprotocols=[JSON_RELIABLE_V1])
    with pytest.raises(websockets.ConnectionClosed) as refused:
        await asyncio.wait_for(ws2.recv(), 5)
    assert refused.value.rcvd.code == 1008


async def test_acknowledged_messages_free_the_buffer(srv):
    client = await _reliable(srv)
    hub = srv.server.hub("h")
    for i in range(100):  # five times the limit, acknowledged as it goes
        await hub.send_to_all(i)
        message = await client.recv()
        await client.send({"type": "sequenceAck", "sequenceId": message["sequenceId"]})
        await asyncio.sleep(0)
    assert message["sequenceId"] == 100


async def test_repeated_ack_id_is_duplicate(srv):
    client = await _reliable(srv, roles=["webpubsub.joinLeaveGroup"])
    await client.send({"type": "joinGroup", "group": "g", "ackId": 42})
    assert await client.recv() == {"type": "ack", "ackId": 42, "success": True}
    await client.send({"type": "joinGroup", "group": "g", "ackId": 42})
    dup = await client.recv()
    assert dup["success"] is False and dup["error"]["name"] == "Duplicate" and "42" in dup["error"]["message"]


async def test_the_previous_reconnection_token_still_works(srv):
    """A drop right after a recovery's upgrade, before the client read its new token, must not
    cost the session: the token before the current one is accepted too (but not older ones)."""
    ws = await websockets.connect(client_url(srv, "h"), subprotocols=[JSON_RELIABLE_V1])
    hello = await _hello(ws)
    cid, first = hello["connectionId"], hello["reconnectionToken"]
    ws.transport.abort()
    await asyncio.sleep(0.05)
    ws2 = await websockets.connect(_recovery_url(srv, "h", cid, first), subprotocols=[JSON_RELIABLE_V1])
    second = (await _hello(ws2))["reconnectionToken"]
    ws2.transport.abort()  # as if the client never read `second`
    await asyncio.sleep(0.05)
    ws3 = await websockets.connect(_recovery_url(srv, "h", cid, first), subprotocols=[JSON_RELIABLE_V1])
    third = (await _hello(ws3))["reconnectionToken"]
    assert len({first, second, third}) == 3
    ws3.transport.abort()
    await asyncio.sleep(0.05)
    ws4 = await websockets.connect(_recovery_url(srv, "h", cid, first), subprotocols=[JSON_RELIABLE_V1])
    with pytest.raises(websockets.ConnectionClosed) as refused:
        await asyncio.wait_for(ws4.recv(), 5)
    assert refused.value.rcvd.code == 1008 and "token" in refused.value.rcvd.reason
