"""A reliable session moving between nodes: its client recovered onto a node that does not hold
it, so that node asks the holder (`take`), which gives up the session's state (`give`)."""
from __future__ import annotations

import asyncio
import logging

from ..base import BrokerHandler
from ..resp import RedisGone
from .bus import TAKE_SESSION, Envelope, OperationBus, encode_envelope
from .link import Link, unavailable

__all__ = ["SessionHandover"]

log = logging.getLogger("fastpush.broker")


class SessionHandover:
    def __init__(self, link: Link, bus: OperationBus) -> None:
        self._link = link
        self._bus = bus
        self.handler: BrokerHandler | None = None
        bus.on_take_session = self.give

    async def take(self, hub: str, connection_id: str, token: str | None, subprotocol: str | None) -> bytes | None:
        """The session's state from the node holding it, or None (nowhere, or the token did not match)."""
        link, bus = self._link, self._bus
        link.check()
        request_id, replies = bus.expect_replies()
        message = encode_envelope(Envelope(TAKE_SESSION, request_id, link.node_id, connection_id.encode(),
                                           hub=hub, token=token or "", subprotocol=subprotocol))
        try:
            receivers = await bus.to_connection(hub, connection_id, message)
        except (RedisGone, OSError) as exc:
            bus.forget(request_id)
            raise unavailable(exc) from None
        if receivers <= 0:
            bus.forget(request_id)
            return None
        results = await bus.await_replies(request_id, replies, receivers)
        return next((data for ok, data in results if ok), None)

    def give(self, envelope: Envelope) -> None:
        """Another node asks for a session held here: end it here, reply with its state once the
        registry writes of its leaving are done (so the new holder's writes come after them)."""
        link, reply_to, data = self._link, envelope.reply_to, envelope.data
        if self.handler is None or reply_to is None or data is None:
            return
        link.collected = []
        try:
            state = self.handler.hand_over(envelope.hub, data.decode(), envelope.token or None, envelope.subprotocol)
        finally:
            writes, link.collected = link.collected, None

        async def reply() -> None:
            try:
                await asyncio.gather(*writes)
                await self._bus.reply(reply_to, envelope.request_id, state is not None, state)
            except (RedisGone, OSError) as exc:
                log.warning("node %s: could not hand a session over: %s", link.node_id, exc)
        asyncio.get_running_loop().create_task(reply())
