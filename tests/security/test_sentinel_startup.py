"""What a Sentinel answers decides where a node connects, so every answer is checked and bounded.
At start, each wrong answer is one line on stderr and exit code 2, naming the Sentinel and what
was wrong, never a traceback: an unknown master name, something that is not the Redis protocol,
a reply of the wrong shape or without end, silence, a plain Redis where a Sentinel should be, a
master that says it is a replica, a refused Sentinel password or master password. While serving, a followed Sentinel
that sends garbage is left (and another followed), and the node keeps serving.

Real Sentinels and redis-servers where the answer can be had from them; scripted peers for the
answers no real Sentinel gives.
"""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from tests.cli_process import ServeProcess, run_fastpush
from tests.cluster.test_cluster import _endpoint, arest
from tests.conftest import ACCESS_KEY, RedisProcess
from tests.helpers import JSON_V1, ServerView, connect, eventually
from tests.security.test_startup import assert_refused, free_port
from tests.sentinel_cluster import MASTER_NAME, SentinelCluster, command

pytestmark = pytest.mark.timeout(120)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ENV = {"FASTPUSH_ACCESS_KEY": ACCESS_KEY}


async def serve(url: str) -> str:
    """Start `fastpush serve --redis-url url`, which must fail: its one line."""
    result = await asyncio.to_thread(run_fastpush, "serve", "--port", "0", "--redis-url", url, env=ENV)
    return assert_refused(result, "--redis-url")


async def scripted(script: Script) -> tuple[asyncio.AbstractServer, int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except (ConnectionError, OSError):
            pass  # the node hung up, as it should when the answer is wrong
        finally:
            writer.close()
    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def answer(text: bytes) -> tuple[asyncio.AbstractServer, int]:
    """A peer that answers `text` to whatever it is asked, then waits for the hang-up."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(text)
        if text:  # else hang up at once
            await reader.read(4096)
    return await scripted(script)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    """A real Sentinel watching a real master (no replica: enough to be asked)."""
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"), sentinels=1)
    yield cluster
    cluster.stop()


async def test_an_unknown_master_name(sentinel):
    line = await serve(f"redis+sentinel://127.0.0.1:{sentinel.sentinel_ports[0]}/no-such-master")
    assert "knows no master named 'no-such-master'" in line and f"127.0.0.1:{sentinel.sentinel_ports[0]}" in line


async def test_no_sentinel_answers():
    ports = [free_port(), free_port()]
    line = await serve(f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/m")
    assert "cannot reach the Redis master 'm' through Sentinel" in line and "no Sentinel named the master" in line
    assert all(f"127.0.0.1:{port}" in line for port in ports)


@pytest.mark.parametrize(("text", "words"), [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "not the Redis protocol"),
    (b"*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n$1\r\nx\r\n", "not a master's address"),
    (b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n99999\r\n", "not a master's address"),
    (b"*2\r\n$13\r\n127.0.0.1 -x \r\n$4\r\n6379\r\n", "not a master's address"),
    (b"*2\r\n:1\r\n:2\r\n", "not a master's address"),
    (b"+OK\r\n", "not a master's address"),
    (b"-ERR unknown command 'SENTINEL'\r\n", "is not a Sentinel"),
    (b"", "closed the connection without answering"),
])
async def test_a_sentinel_answering_garbage(text, words):
    server, port = await answer(text)
    try:
        line = await serve(f"redis+sentinel://127.0.0.1:{port}/m")
    finally:
        server.close()
    assert words in line and "Traceback" not in line


async def test_a_reply_without_end_is_cut_off():
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.read(4096)
        writer.write(b"$1000000000\r\n")
        while sent < 50_000_000:  # bounded here too; the node must hang up long before
            writer.write(b"x" * 65536)
            sent += 65536
            await writer.drain()
    server, port = await scripted(endless)
    try:
        line = await serve(f"redis+sentinel://127.0.0.1:{port}/m")
    finally:
        server.close()
    assert "longer than 65536 bytes" in line
    assert sent < 5_000_000, f"the node read {sent} bytes of one reply"


async def test_a_silent_sentinel_is_given_up_on_and_the_next_asked(sentinel):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the node hangs up
    server, port = await scripted(silent)
    try:
        line = await serve(f"redis+sentinel://127.0.0.1:{port},127.0.0.1:{free_port()}/m")
        assert f"127.0.0.1:{port}: no answer in 2 s" in line
        # the same silent Sentinel first, then a real one: the node starts
        url = f"redis+sentinel://127.0.0.1:{port},127.0.0.1:{sentinel.sentinel_ports[0]}/{MASTER_NAME}"
        node = await asyncio.to_thread(ServeProcess, "--redis-url", url, env=ENV)
        try:
            view = ServerView(_endpoint(node.connection_string), ACCESS_KEY)
            assert (await arest(view, "POST", "/api/hubs/h/:send", b"hi"))[0] == 202
        finally:
            node.stop(signal.SIGTERM)
    finally:
        server.close()


async def test_a_plain_redis_where_a_sentinel_should_be():
    redis = RedisProcess()
    try:
        line = await serve(f"redis+sentinel://127.0.0.1:{redis.port}/m")
    finally:
        redis.stop()
    assert "is not a Sentinel" in line


async def test_a_master_that_says_it_is_a_replica():
    replica = RedisProcess()
    try:
        await asyncio.to_thread(replica_of_nothing, replica.port)
        server, port = await answer(b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n" % (len(str(replica.port)), replica.port))
        try:
            line = await serve(f"redis+sentinel://127.0.0.1:{port}/m")
        finally:
            server.close()
    finally:
        replica.stop()
    assert f"127.0.0.1:{replica.port}" in line and "is not a master" in line


def replica_of_nothing(port: int) -> None:
    assert command(port, "REPLICAOF", "127.0.0.1", str(free_port())) == b"OK"


async def test_a_sentinel_password(tmp_path):
    cluster = SentinelCluster(tmp_path, sentinels=1, sentinel_password="s3cret")
    try:
        base = f"redis+sentinel://127.0.0.1:{cluster.sentinel_ports[0]}/{MASTER_NAME}"
        line = await serve(base + "?sentinel_password=wrong")
        assert "refused the login" in line
        line = await serve(base)  # no password: the Sentinel refuses the question
        assert "is not a Sentinel, or refused the question" in line and "NOAUTH" in line
        node = await asyncio.to_thread(ServeProcess, "--redis-url", base + "?sentinel_password=s3cret", env=ENV)
        try:
            view = ServerView(_endpoint(node.connection_string), ACCESS_KEY)
            assert (await arest(view, "POST", "/api/hubs/h/:send", b"hi"))[0] == 202
        finally:
            node.stop(signal.SIGTERM)
    finally:
        cluster.stop()


async def test_a_followed_sentinel_sending_garbage_is_left_and_the_node_keeps_serving(sentinel, hub_name):
    """The scripted Sentinel names the real master, then answers the node's SUBSCRIBE with a reply
    without end; the node drops it (and tries again), and serves on."""
    master = f"127.0.0.1:{sentinel.master_port}".split(":")
    followed = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal followed
        request = await reader.read(4096)
        if b"SUBSCRIBE" in request:
            followed += 1
            writer.write(b"$1000000000\r\n" + b"x" * 200_000)
        else:
            writer.write(b"*2\r\n$9\r\n%s\r\n$%d\r\n%s\r\n" % (master[0].encode(), len(master[1]), master[1].encode()))
        await writer.drain()
        await reader.read(4096)
    server, port = await scripted(script)
    try:
        node = await asyncio.to_thread(ServeProcess, "--redis-url", f"redis+sentinel://127.0.0.1:{port}/m", env=ENV)
        try:
            assert await eventually(lambda: followed >= 2, 20)  # left, and followed again a second later
            view = ServerView(_endpoint(node.connection_string), ACCESS_KEY)
            client = await connect(view, hub_name, JSON_V1)
            assert (await arest(view, "POST", f"/api/hubs/{hub_name}/:send", b"still here"))[0] == 202
            assert (await client.recv())["data"] == "still here"
            health = json.loads((await arest(view, "GET", "/api/health"))[1])
            assert health["status"] == "healthy", health
        finally:
            node.stop(signal.SIGTERM)
    finally:
        server.close()


async def test_a_wrong_master_password_is_one_line(sentinel, tmp_path):
    """Redis refusing AUTH, through Sentinel or not (it used to end the start in a traceback)."""
    line = await serve(f"redis+sentinel://127.0.0.1:{sentinel.sentinel_ports[0]}/{MASTER_NAME}?password=wrong")
    assert "Redis refused AUTH" in line and f"Redis master '{MASTER_NAME}'" in line
    port = free_port()
    guarded = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--requirepass", "right", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert await eventually(lambda: command_answers(port), 10)
        line = await serve(f"redis://:wrong@127.0.0.1:{port}")
        assert "Redis refused AUTH" in line and "WRONGPASS" in line
    finally:
        guarded.kill()
        guarded.wait(10)


def command_answers(port: int) -> bool:
    try:
        command(port, "PING", timeout=1)
    except OSError:
        return False
    return True
