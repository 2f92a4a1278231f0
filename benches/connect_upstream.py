"""A small application server for the benchmarks: it answers every `connect` event after a fixed
delay (as an application that looks the client up somewhere would) and counts how many it holds
at once, so a reconnect storm can show what a blocking connect handler does to it.

It runs in the orchestrator's event loop (it only sleeps and answers), on loopback. The server
under test gets it from a config file (`config_file`) naming it as the bench hub's handler of the
`connect` system event.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

__all__ = ["ConnectUpstream"]

MAX_HEAD = 64 * 1024


class ConnectUpstream:
    """Answers the abuse-protection OPTIONS at once and every POST after `delay` seconds (204)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.answered = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def reset(self) -> None:
        """Count afresh (the peak of the storm, not of the ramp)."""
        self.peak, self.answered = self.in_flight, 0

    def figures(self) -> dict:
        return {"delay_ms": round(self.delay * 1000, 3), "answered": self.answered, "peak_in_flight": self.peak}

    def config_file(self, directory: Path, hub: str) -> Path:
        path = directory / "connect-upstream.toml"
        path.write_text(f'[[hubs.{hub}.eventHandlers]]\n'
                        f'urlTemplate = "http://127.0.0.1:{self.port}/{{hub}}/{{event}}"\n'
                        f'userEventPattern = ""\nsystemEvents = ["connect"]\n')
        return path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep-alive HTTP/1.1, one request at a time, as the server under test sends them."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEAD:
                    break
                lines = head.decode("latin-1").split("\r\n")
                length = next((int(v) for n, _, v in (line.partition(":") for line in lines[1:])
                               if n.strip().lower() == "content-length"), 0)
                if length:
                    await reader.readexactly(length)
                if lines[0].startswith("OPTIONS "):
                    writer.write(b"HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: *\r\nContent-Length: 0\r\n\r\n")
                    continue
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                try:
                    await asyncio.sleep(self.delay)
                finally:
                    self.in_flight -= 1
                self.answered += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
