"""Dead peers are found by the shared heartbeat: pinged when quiet, dropped when silent too long;
a reliable session outlives its dead socket for the recovery window."""
from __future__ import annotations

import asyncio

import pytest
import websockets

import fastpush
from tests.fault_proxy import FaultProxy
from tests.helpers import JSON_RELIABLE_V1, client_token


@pytest.fixture
async def server():
    async with fastpush.Server(port=0, keepalive_seconds=0.1, idle_timeout_seconds=0.5,
                               recovery_window_seconds=5) as srv:
        yield srv


async def _through_proxy(server, proxy, subprotocol=None):
    token = client_token(server.keyring.primary, server.endpoint, "h")
    return await websockets.connect(f"ws://127.0.0.1:{proxy.port}/client/hubs/h?access_token={token}",
                                    subprotocols=[subprotocol] if subprotocol else None, ping_interval=None)


async def test_answering_clients_stay(server):
    token = client_token(server.keyring.primary, server.endpoint, "h")
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/client/hubs/h?access_token={token}",
                                  ping_interval=None):
        await asyncio.sleep(1.0)  # several sweeps: pinged, answers with pongs, stays
        assert server.hub("h")._hub.connection_count == 1


async def test_silent_peer_is_dropped_and_reliable_session_kept(server):
    proxy = await FaultProxy(server.port).start()
    await _through_proxy(server, proxy)  # a raw client
    reliable = await _through_proxy(server, proxy, JSON_RELIABLE_V1)
    await reliable.recv()
    hub = server.hub("h")._hub
    assert hub.connection_count == 2
    stall = asyncio.create_task(proxy.stall(10.0))  # a vanished peer: no FIN, no RST, no bytes
    def only_the_session_is_left() -> bool:
        conns = list(hub.tables.connections.values())
        return len(conns) == 1 and conns[0].transport.is_disconnected

    for _ in range(160):  # up to 8 s: the machine may be busy
        if only_the_session_is_left():
            break
        await asyncio.sleep(0.05)
    assert only_the_session_is_left()  # the raw one is gone; the reliable session waits
    assert next(iter(hub.tables.connections.values())).keep_session
    stall.cancel()
    await proxy.stop()
