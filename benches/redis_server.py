"""A throwaway redis-server for one benchmark row: free loopback port, nothing persisted.

Each Redis row gets a fresh one, so no row sees another's keys and its memory and CPU belong to
that row alone.
"""
from __future__ import annotations

import asyncio
import shutil
import socket

from .procs import Children

__all__ = ["INSTALL_HINT", "RedisServer", "missing"]

INSTALL_HINT = "redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)"
READY_TIMEOUT = 10.0
POLL = 0.05
NAME = "redis-server"


def missing() -> str | None:
    """Why no redis-server can be started here, or None."""
    return None if shutil.which(NAME) else INSTALL_HINT


def _free_port() -> int:
    """A port nobody listens on now; redis-server binds it a moment later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A started redis-server: `url` for fastpush's --redis-url, `pid` for CPU and memory."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int):
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(cls, children: Children, cpus: frozenset[int], *extra: str, name: str = NAME) -> RedisServer:
        """Start it (`extra`: more redis-server options) and wait (bounded) until it answers PING. It
        logs into the file Children keeps for its stderr, so a failure shows redis-server's own words."""
        port = _free_port()
        argv = [NAME, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(children.log_dir), "--logfile", str(children.log_dir / f"{name}.log"),
                "--loglevel", "warning", *extra]
        proc = await children.spawn(name, argv, cpus, children.log_dir)
        server = cls(proc, port)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while not await server._pong():
                    if proc.returncode is not None:
                        raise RuntimeError(f"redis-server exited with code {proc.returncode}")
                    await asyncio.sleep(POLL)
        except (TimeoutError, RuntimeError) as exc:
            await children.stop(proc)
            why = str(exc) or f"did not answer PING within {READY_TIMEOUT} s"
            raise RuntimeError(f"redis-server on port {port}: {why}\n{children.log_tail(name)}") from None
        return server

    async def _pong(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            return await reader.readline() == b"+PONG\r\n"
        except OSError:
            return False
        finally:
            writer.close()

    async def stop(self, children: Children) -> None:
        await children.stop(self.proc)
