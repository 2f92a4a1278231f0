"""Fixtures: a real fastpush server on a free 127.0.0.1 port, in its own thread and uvloop loop,
so synchronous SDK calls in a test never block the server."""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

from fastpush import Server
from fastpush.devcert import ensure_dev_certificate, server_ssl_context

ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"


def pytest_configure(config):
    config.addinivalue_line("markers", "both_loops: run each async test on asyncio's loop and on uvloop's")
    config.addinivalue_line("markers", "slow: takes tens of seconds (still run by ./check and CI)")


def pytest_asyncio_loop_factories(config, item):
    """Tests run on asyncio's own loop (the servers the shared fixtures start run on uvloop in a
    thread of their own); tests marked `both_loops` run on each of the two."""
    if item.get_closest_marker("both_loops") is not None:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@dataclass
class RunningServer:
    server: Server
    loop: asyncio.AbstractEventLoop
    ca_file: Path | None = None

    @property
    def connection_string(self) -> str:
        return self.server.connection_string

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def access_key(self) -> str:
        return self.server.keyring.primary

    def call(self, fn, *args, **kwargs):
        """Run `fn` on the server's loop thread (the embedding API is not thread-safe) and return its
        result, awaited when it is a coroutine (the embedding API's methods are)."""
        async def run():
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    async def acall(self, fn, *args, **kwargs):
        return await asyncio.to_thread(self.call, fn, *args, **kwargs)


def _run_in_thread(make_server) -> tuple[RunningServer, threading.Thread, asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    started: concurrent.futures.Future = concurrent.futures.Future()

    def main():
        asyncio.set_event_loop(loop)
        try:
            server = make_server()
            loop.run_until_complete(server.start())
            started.set_result(server)
        except BaseException as exc:
            started.set_exception(exc)
            return
        loop.run_forever()

    thread = threading.Thread(target=main, name="fastpush-test-server", daemon=True)
    thread.start()
    return RunningServer(started.result(timeout=10), loop), thread, loop


def _stop(running: RunningServer, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop).result(timeout=10)
    running.loop.call_soon_threadsafe(running.loop.stop)
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def server():
    running, thread, _ = _run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY))
    yield running
    _stop(running, thread)


@pytest.fixture(scope="session")
def dev_cert(tmp_path_factory):
    return ensure_dev_certificate(tmp_path_factory.mktemp("devcert"))


@pytest.fixture(scope="session")
def tls_server(dev_cert):
    context = server_ssl_context(dev_cert.cert_file, dev_cert.key_file)
    running, thread, _ = _run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY, ssl_context=context))
    running.ca_file = dev_cert.ca_file
    yield running
    _stop(running, thread)


@pytest.fixture
def hub_name() -> str:
    """A fresh hub per test, so tests sharing the session server never see each other's clients."""
    return "hub_" + uuid.uuid4().hex[:12]


class RedisProcess:
    """A real redis-server on a free loopback port, which a test may stop and start again."""

    def __init__(self):
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            pytest.fail("the cluster tests need redis-server on PATH (Debian: apt-get install redis-server)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server():
    redis = RedisProcess()
    yield redis
    redis.stop()


@pytest.fixture(scope="session")
def cluster(redis_server):
    """Three fastpush nodes sharing one Redis, each in its own thread and loop."""
    nodes = [_run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY, redis_url=redis_server.url))
             for _ in range(3)]
    yield [running for running, _, _ in nodes]
    for running, thread, _ in nodes:
        _stop(running, thread)


class SplitDeployment:
    """Clients connect to one node, the REST caller talks to another (cluster), or both to the same."""

    def __init__(self, clients: RunningServer, rest: RunningServer):
        self.clients, self.rest = clients, rest
        self.endpoint, self.port, self.access_key = clients.endpoint, clients.port, clients.access_key
        self.connection_string = rest.connection_string
