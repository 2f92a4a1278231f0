"""A TCP proxy for fault tests: it forwards 127.0.0.1 traffic to a server and can cut every
connection (as a network drop: the peers see a reset, no close frame) or stall it (bytes stop
flowing but nothing closes). It counts the connections it accepts (each after the first is a
reconnect) and the bytes each carried, and can wait for one to be up, so a test's cut always hits
a live connection. While `refusing`, it drops each new connection at once (a server that is down);
`go_down` cuts every connection and starts refusing, `come_up` ends it."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Link:
    """One proxied connection's traffic, for a failing test's report."""
    number: int  # 1 for the first accepted
    to_server: int = 0
    to_client: int = 0

    def __str__(self) -> str:
        return f"#{self.number}: {self.to_server} B up, {self.to_client} B down"


class FaultProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self.accepted = 0
        self.refusing = False
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.links: list[Link] = []

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every proxied connection at once."""
        if self._pairs:
            self.cuts += 1
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()

    async def stall(self, seconds: float) -> None:
        """Hold every byte in both directions for `seconds`, closing nothing."""
        self.hold()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.release()

    def hold(self) -> None:
        """Hold every byte in both directions from now until `release`, closing nothing."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def go_down(self) -> None:
        """Cut every connection, and reset each new one until `come_up` (a client's reconnects fail)."""
        self.refusing = True
        self.cut()

    def come_up(self) -> None:
        self.refusing = False

    async def wait_connected(self, deadline: float, accepted: int = 0) -> bool:
        """Until a proxied connection is up and at least `accepted` were accepted in all, or the
        deadline (time.monotonic()) passed; whether that happened."""
        while not (self._pairs and self.accepted >= accepted):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            client_writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, up_writer)
        self._pairs.add(pair)
        link = Link(self.accepted)
        self.links.append(link)
        await asyncio.gather(self._pipe(client_reader, up_writer, link, upstream=True),
                             self._pipe(up_reader, client_writer, link, upstream=False))
        self._pairs.discard(pair)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link,
                    upstream: bool) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if upstream:
                    link.to_server += len(data)
                else:
                    link.to_client += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
