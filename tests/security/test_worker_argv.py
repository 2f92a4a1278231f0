"""`fastpush serve --workers N` starts its workers without the Redis password on their command
line: anyone on the machine can read a process's argv (`ps`, /proc/PID/cmdline), not its environment."""
from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_process import ServeProcess
from tests.cluster.test_cluster import _endpoint, arest
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_V1, ServerView, connect

pytestmark = pytest.mark.timeout(120)
PASSWORD = "hunter2-not-in-argv"


def _children(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc (every thread's list, as threads start processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


@pytest.fixture
def redis_with_password():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executable = shutil.which("redis-server")
    assert executable, "the cluster tests need redis-server on PATH"
    proc = subprocess.Popen([executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--requirepass", PASSWORD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_workers_get_the_redis_url_outside_their_command_line(redis_with_password):
    # The operator passes the URL in the environment too, so the parent's own argv is clean as well.
    serve = ServeProcess("--workers", "2", env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY,
                                                "FASTPUSH_REDIS_URL": redis_with_password})
    try:
        workers = _children(serve.proc.pid)
        assert len(workers) == 2, workers
        for pid in [serve.proc.pid, *workers]:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"fastpush" in argv and b"serve" in argv, argv  # it is the process we mean
            assert not any(PASSWORD.encode() in arg for arg in argv), argv
        # The workers did get the password: they logged in, and a send reaches their clients.
        view = ServerView(_endpoint(serve.connection_string), ACCESS_KEY)

        async def scenario():
            clients = [await connect(view, "argv", JSON_V1) for _ in range(4)]
            assert (await arest(view, "POST", "/api/hubs/argv/:send", b"through Redis"))[0] == 202
            for client in clients:
                assert (await client.recv())["data"] == "through Redis"
        asyncio.run(scenario())
        assert serve.stop(signal.SIGTERM) == 0
        assert PASSWORD not in "".join(serve.output) + serve.proc.stdout.read()  # nor in the log
    finally:
        if serve.proc.poll() is None:
            serve.stop(signal.SIGKILL)
