"""A Prometheus stand-in for `--scrape-metrics`: GET /metrics with the access key every interval on
one keep-alive connection, for as long as a fastpush server is measured, so its figures include
what being scraped costs. Runs in the orchestrator's process (the load side's CPU)."""
from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit

__all__ = ["MetricsScraper"]

TIMEOUT = 10.0
# What the server itself says it spent answering /metrics (its REST histogram, operation="metrics").
_SERVED = re.compile(rb'^fastpush_rest_request_duration_seconds_(sum|count)\{operation="metrics"\} (\S+)$', re.M)


class MetricsScraper:
    def __init__(self, endpoint: str, access_key: str, interval: float):
        parts = urlsplit(endpoint)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = (f"GET /metrics HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {access_key}\r\n"
                        f"Accept: text/plain\r\n\r\n").encode()
        self.interval = interval
        self.scrapes = 0
        self.failures: list[str] = []
        self.seconds = 0.0  # spent waiting for answers, in all
        self.bytes = 0
        self.last_body = b""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        served = {kind.decode(): float(value) for kind, value in _SERVED.findall(self.last_body)}
        return {"interval_seconds": self.interval, "scrapes": self.scrapes, "failures": self.failures[:5],
                "mean_ms": round(self.seconds / self.scrapes * 1000, 2) if self.scrapes else None,
                "server_mean_ms": round(served["sum"] / served["count"] * 1000, 2) if served.get("count") else None,
                "mean_bytes": round(self.bytes / self.scrapes) if self.scrapes else None}

    async def _run(self) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            while True:
                started = time.monotonic()
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    await asyncio.wait_for(self._scrape(reader, writer), TIMEOUT)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    if writer is not None:
                        writer.close()
                    writer = None
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            if writer is not None:
                writer.close()

    async def _scrape(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")),
                      0)
        body = await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(f"answered {lines[0].decode()}: {body[:200]!r}")
        self.scrapes += 1
        self.bytes += len(body)
        self.last_body = body
        self.seconds += time.monotonic() - started
