"""Fixtures for the attack suite: servers with the limits a test wants, and a probe that a server
still serves a healthy client while (or after) it is attacked."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from fastpush import Server
from tests.conftest import ACCESS_KEY, RunningServer, _run_in_thread, _stop
from tests.helpers import JSON_V1, connect


@pytest.fixture
def make_server():
    """`make_server(**kwargs)` starts an in-process server with those Server options (on a free
    127.0.0.1 port, its own thread and loop); every one started is stopped after the test."""
    started = []

    def make(**kwargs) -> RunningServer:
        running, thread, _ = _run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY, **kwargs))
        started.append((running, thread))
        return running

    yield make
    for running, thread in started:
        _stop(running, thread)


async def assert_still_serving(server, timeout: float = 10.0) -> None:
    """A fresh JSON client joins a group and receives its own message: the server is healthy."""
    hub = "healthy_" + uuid.uuid4().hex[:8]

    async def probe() -> None:
        client = await connect(server, hub, JSON_V1, roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        try:
            assert (await client.request({"type": "joinGroup", "group": "g"}))["success"] is True
            await client.send({"type": "sendToGroup", "group": "g", "data": "ping", "dataType": "text"})
            message = await client.recv()
            assert message["type"] == "message" and message["data"] == "ping", message
        finally:
            await client.close()

    await asyncio.wait_for(probe(), timeout)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
