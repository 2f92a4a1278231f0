"""The Redis connections against a scripted fake server: messages, error replies, a server that
hangs up during the handshake, barriers sharing one PING, and one loop turn's commands in one send."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from fastpush.broker.resp import RedisAddress, RedisGone, RespConnection, SubscriberConnection

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _fake_redis(script: Script) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    """One RESP array of bulk strings, as hiredis.pack_command writes it."""
    count = int((await reader.readline())[1:])
    parts = []
    for _ in range(count):
        size = int((await reader.readline())[1:])
        parts.append((await reader.readexactly(size + 2))[:-2])
    return parts


async def test_messages_reach_the_callback_and_a_barrier_completes():
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await _read_command(reader) == [b"SUBSCRIBE", b"ch"]
        writer.write(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
                     b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n")
        assert await _read_command(reader) == [b"PING"]
        writer.write(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        await reader.read()  # until the client closes

    server, port = await _fake_redis(script)
    got: list[tuple[bytes, bytes]] = []
    subscriber = SubscriberConnection(RedisAddress("127.0.0.1", port), lambda c, d: got.append((c, d)))
    await subscriber.connect()
    subscriber.subscribe(b"ch")
    await asyncio.wait_for(subscriber.barrier(), 5)
    assert got == [(b"ch", b"hi")]
    await subscriber.close()
    server.close()


async def test_an_error_reply_in_subscribe_mode_ends_the_connection_cleanly():
    """Like a lost socket: the barrier fails with RedisGone, `closed` completes, and the reader
    task ends without an exception of its own (it used to die of a TypeError)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_command(reader)
        writer.write(b"-NOPERM this user has no permissions to access the 'ch' channel\r\n")
        await reader.read()

    server, port = await _fake_redis(script)
    subscriber = SubscriberConnection(RedisAddress("127.0.0.1", port), lambda c, d: None)
    await subscriber.connect()
    subscriber.subscribe(b"ch")
    with pytest.raises(RedisGone):
        await asyncio.wait_for(subscriber.barrier(), 5)
    assert subscriber.closed is not None
    await asyncio.wait_for(subscriber.closed, 5)
    task = subscriber._reader_task
    assert task is not None
    await asyncio.wait([task], timeout=5)
    assert task.done() and task.exception() is None
    await subscriber.close()
    server.close()


@pytest.mark.timeout(20)
async def test_a_server_that_hangs_up_during_the_handshake_fails_the_connect():
    """EOF before the AUTH reply is a failed connect, not an endless loop on an empty read (which
    held the event loop, so no timeout could end it)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_command(reader)
        writer.close()

    server, port = await _fake_redis(script)
    subscriber = SubscriberConnection(RedisAddress("127.0.0.1", port, password="secret"), lambda c, d: None)
    with pytest.raises(RedisGone):
        await asyncio.wait_for(subscriber.connect(), 5)
    await subscriber.close()
    server.close()


async def test_barriers_share_one_ping_and_need_none_once_everything_is_in_force():
    """Two barriers after one SUBSCRIBE cost one PING; a barrier after its PONG, with nothing sent
    since, completes without one; a ping (the liveness probe, a last-value read) always sends one."""
    seen: list[list[bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            command = await _read_command(reader)
            seen.append(command)
            if command[0] == b"SUBSCRIBE":
                writer.write(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
            else:
                writer.write(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        await reader.read()

    server, port = await _fake_redis(script)
    subscriber = SubscriberConnection(RedisAddress("127.0.0.1", port), lambda c, d: None)
    await subscriber.connect()
    subscriber.subscribe(b"ch")
    first, second = subscriber.barrier(), subscriber.barrier()
    first.cancel()  # one waiter giving up leaves the other's barrier be
    await asyncio.wait_for(second, 5)
    settled = subscriber.barrier()
    assert settled.done() and settled.exception() is None
    await asyncio.wait_for(subscriber.ping(), 5)
    assert seen == [[b"SUBSCRIBE", b"ch"], [b"PING"], [b"PING"]]
    await subscriber.close()
    server.close()


async def test_one_loop_turns_commands_are_answered_in_order_and_a_close_drops_the_unsent():
    """Commands issued in one turn go out together, in order; closing in the same turn sends none
    of them: a command answered as failed (RedisGone) must never reach Redis later."""
    received = bytearray()
    done = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            command = await _read_command(reader)
            writer.write(b"$%d\r\n%s\r\n" % (len(command[1]), command[1]))
        received.extend(await reader.read())  # until the client's FIN
        done.set()

    server, port = await _fake_redis(script)
    connection = RespConnection(RedisAddress("127.0.0.1", port))
    await connection.connect()
    replies = [connection.execute("ECHO", f"m{n}") for n in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*replies), 5) == [b"m0", b"m1", b"m2"]
    unsent = connection.execute("SET", "k", "v")
    await connection.close()
    with pytest.raises(RedisGone):
        await asyncio.wait_for(unsent, 5)
    await asyncio.wait_for(done.wait(), 5)
    assert received == b""
    server.close()
