"""`fastpush token`, `send` and `status` against a real `fastpush serve` process."""
from __future__ import annotations

import asyncio
import json
import signal

import pytest
import websockets

from tests.cli_process import ServeProcess, run_fastpush
from tests.helpers import JSON_V1

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefgh"


@pytest.fixture(scope="module")
def serve():
    running = ServeProcess("--access-key", KEY)
    yield running
    running.stop(signal.SIGINT)


def fastpush(serve: ServeProcess, *args: str):
    return run_fastpush(*args, env={"FASTPUSH_CONNECTION_STRING": serve.connection_string})


async def connected_client(serve: ServeProcess, *token_args: str):
    """A JSON client on the URL `fastpush token` printed, once it has read its `connected` message."""
    printed = await asyncio.to_thread(fastpush, serve, "token", "--hub", "tools", *token_args)
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith("ws://127.0.0.1:") and "/client/hubs/tools?access_token=" in url
    ws = await websockets.connect(url, subprotocols=[JSON_V1])
    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello["event"] == "connected"
    return ws, hello


async def test_token_url_is_accepted_with_its_user_and_groups(serve):
    ws, hello = await connected_client(serve, "--user", "ann", "--group", "room", "--minutes", "5")
    assert hello["userId"] == "ann"
    sent = await asyncio.to_thread(fastpush, serve, "send", "--hub", "tools", "--group", "room",
                                   "--content-type", "application/json", '{"n": 1}')
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")
    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert (message["group"], message["dataType"], message["data"]) == ("room", "json", {"n": 1})
    await ws.close()


@pytest.mark.parametrize("target", [(), ("--user", "bob"), ("--connection", None)])
async def test_send_reaches_the_client(serve, target):
    ws, hello = await connected_client(serve, "--user", "bob")
    if target == ("--connection", None):
        target = ("--connection", hello["connectionId"])
    sent = await asyncio.to_thread(fastpush, serve, "send", "--hub", "tools", *target, "hello")
    assert sent.returncode == 0, sent.stderr
    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert (message["from"], message["dataType"], message["data"]) == ("server", "text", "hello")
    await ws.close()


def test_status_prints_the_health_report(serve):
    status = fastpush(serve, "status")
    assert (status.returncode, status.stderr) == (0, "")
    assert status.stdout.splitlines() == ["status: healthy", "broker: broker=memory, healthy=True"]


@pytest.mark.parametrize("command", [("status",), ("token", "--hub", "tools"), ("send", "--hub", "tools", "hi")])
@pytest.mark.parametrize("connection_string, expected", [
    ("", "no connection string"),
    ("AccessKey=abc;Version=1.0;", "the connection string must be"),
    ("Endpoint=ftp://127.0.0.1;AccessKey=abc;Version=1.0;", "the connection string must be"),
])
def test_a_wrong_connection_string_is_one_line_and_exit_2(command, connection_string, expected):
    finished = run_fastpush(*command, env={"FASTPUSH_CONNECTION_STRING": connection_string})
    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr.startswith("fastpush: " + expected) and finished.stderr.count("\n") == 1


def test_a_wrong_key_or_an_unreachable_server_is_one_line_and_exit_2(serve):
    wrong_key = serve.connection_string.replace(KEY, "Z" * len(KEY))
    refused = run_fastpush("send", "--connection-string", wrong_key, "--hub", "tools", "hi")
    assert refused.returncode == 2 and refused.stderr.startswith("fastpush: the server answered 401: ")
    assert refused.stderr.count("\n") == 1
    gone = run_fastpush("status", "--connection-string", f"Endpoint=http://127.0.0.1:1;AccessKey={KEY};Version=1.0;")
    assert gone.returncode == 2 and gone.stderr.startswith("fastpush: cannot reach http://127.0.0.1:1: ")
    assert gone.stderr.count("\n") == 1
