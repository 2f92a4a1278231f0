"""A reliable session moving between nodes: its client recovered onto a node that does not hold it
(after a drop, or because its node is draining), so that node takes it from the holder.

Nothing sent to the session may be lost or delivered twice, while sends keep arriving on the hub's
channel, the session's group channels and the holder's node channel. So the move happens at one
point of Redis's own order of messages, which every subscriber sees in the same order:

1. The new node asks the holder (`take`, TAKE_SESSION on the holder's channel). The holder checks
   the reconnection token, writes a reservation into the session's `c:` entry and answers with the
   session's identity (who, roles, groups; not its buffered messages). The session stays there.
2. The new node subscribes to the session's hub and group channels and waits until they are in
   force (the caller's `prepare_connection`).
3. `move`: one Lua script checks the reservation, rewrites the session's Redis entries to the new
   node and publishes SESSION_MOVED on the hub's channel, which both nodes are subscribed to.
   Whatever was published before it reached the holder before it; whatever after reaches the new
   node after it (its subscriptions were in force, and connection- or user-routed sends now name
   it). The holder, reading SESSION_MOVED, gives the session up with everything it buffered
   (`BrokerHandler.give_up_session`) and replies with that state; the new node, reading it, lets
   the session join its hub (`arrived`), buffering what comes next, and puts the holder's state
   ahead of it when the reply arrives.

A newer request for the same session replaces the reservation, and the older move then fails
(its client has moved on); a holder that ends the session meanwhile deletes its `c:` entry, and
the move fails too.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..base import BrokerHandler, SessionReservation
from ..errors import BrokerUnavailable, SessionMoving
from ..resp import RedisGone
from .bus import SESSION_MOVED, TAKE_SESSION, Envelope, OperationBus, encode_envelope
from .link import Link, unavailable
from .registry import ClusterRegistry
from .wire import WIRE_VERSION

__all__ = ["SessionHandover"]

log = logging.getLogger("fastpush.broker")
MOVING = b"moving"  # a refused reservation's data when the session is moving onto the node asked


class SessionHandover:
    def __init__(self, link: Link, bus: OperationBus, registry: ClusterRegistry) -> None:
        self._link = link
        self._bus = bus
        self._registry = registry
        self.handler: BrokerHandler | None = None
        # Held here and reserved by another node: (hub, connection id) -> reservation token. An
        # entry goes when the session moves or ends (`forget`): never more than the sessions held.
        self._reserved: dict[tuple[str, str], str] = {}
        # Moving here: reservation token -> what to call when the move is announced.
        self._arriving: dict[str, Callable[[], None]] = {}
        bus.on_take_session = self.reserve
        bus.on_session_moved = self.moved

    # --- the node the client recovered onto ------------------------------------------------------
    async def take(self, hub: str, connection_id: str, token: str | None,
                   subprotocol: str | None) -> SessionReservation | None:
        """Step 1: the session reserved for this node by the node holding it, or None (nowhere, or
        the token did not match)."""
        link, bus = self._link, self._bus
        link.check()
        request_id, replies = bus.expect_replies()
        message = encode_envelope(Envelope(WIRE_VERSION, TAKE_SESSION, request_id, link.node_id, connection_id.encode(),
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
        identity = next((data for ok, data in results if ok and data is not None), None)
        if identity is None:
            if (False, MOVING) in results:
                raise SessionMoving("The session is moving between nodes; try again.")
            return None
        return SessionReservation(hub, connection_id, _reservation(link.node_id, request_id), identity)

    async def move(self, reservation: SessionReservation, arrived: Callable[[], None]) -> bytes | None:
        """Step 3: move the reserved session here (the caller's subscriptions for it are in force);
        see the module's docstring."""
        link, bus = self._link, self._bus
        link.check()
        hub, cid = reservation.hub.lower(), reservation.connection_id
        request_id, replies = bus.expect_replies()
        announcement = encode_envelope(Envelope(WIRE_VERSION, SESSION_MOVED, request_id, link.node_id, cid.encode(),
                                                hub=hub, token=reservation.token))
        self._arriving[reservation.token] = arrived
        try:
            moved = await link.script("move", 1, link.key("c", hub, cid), link.prefix, hub, cid, f"{hub}\0{cid}",
                                      link.node_id, reservation.token, announcement)
            if moved != 1:
                return None
            results = await bus.await_replies(request_id, replies, 1)
        except (RedisGone, OSError) as exc:
            raise unavailable(exc) from None
        finally:
            bus.forget(request_id)
            self._arriving.pop(reservation.token, None)
        ok, state = results[0]
        return state if ok else None

    # --- the node holding the session ------------------------------------------------------------
    def reserve(self, envelope: Envelope) -> None:
        """Another node asks for a session held here: if the token matches, reserve it for that node
        in Redis, then answer with its identity."""
        link, reply_to, data = self._link, envelope.reply_to, envelope.data
        if self.handler is None or reply_to is None or data is None:
            return
        hub, cid = envelope.hub, data.decode(errors="replace")
        try:
            if reply_to == link.node_id:  # it moved here after the asker looked: it is nearly here
                raise SessionMoving(cid)
            identity = self.handler.describe_session(hub, cid, envelope.token or None, envelope.subprotocol)
        except SessionMoving:
            identity = None
            moving = True
        else:
            moving = False
        token = _reservation(reply_to, envelope.request_id)

        async def reply() -> None:
            try:
                ok = identity is not None and await link.script(
                    "reserve", 1, link.key("c", hub.lower(), cid), link.node_id, token) == 1
                if ok:
                    self._reserved[(hub.lower(), cid)] = token
                await self._bus.reply(reply_to, envelope.request_id, ok, identity if ok else MOVING if moving else None)
            except (RedisGone, OSError) as exc:
                log.warning("node %s: could not reserve a session for another node: %s", link.node_id, exc)
        asyncio.get_running_loop().create_task(reply())

    def moved(self, envelope: Envelope) -> None:
        """A session moved (read in the hub channel's order): give it up if it was held here, let it
        arrive if it is moving here; every other node of the hub ignores it."""
        data, token = envelope.data, envelope.token
        if data is None:
            return
        key = (envelope.hub, data.decode(errors="replace"))
        if self._reserved.get(key) == token and envelope.reply_to is not None and self.handler is not None:
            del self._reserved[key]
            self._registry.moved_out = key  # its new node has written it as its own already
            try:
                state = self.handler.give_up_session(*key)
            finally:
                self._registry.moved_out = None
            asyncio.get_running_loop().create_task(self._send_state(envelope.reply_to, envelope.request_id, state))
        arrived = self._arriving.pop(token, None)
        if arrived is not None:
            arrived()

    async def _send_state(self, reply_to: str, request_id: int, state: bytes | None) -> None:
        try:
            await self._bus.reply(reply_to, request_id, state is not None, state)
        except (RedisGone, OSError, BrokerUnavailable) as exc:
            log.warning("node %s: could not hand a session over: %s", self._link.node_id, exc)

    def forget(self, hub: str, connection_id: str) -> None:
        """A session held here ended or moved: no reservation of it is pending any more."""
        if self._reserved:
            self._reserved.pop((hub.lower(), connection_id), None)


def _reservation(node_id: str, request_id: int) -> str:
    """The token of the request `request_id` of node `node_id` (unique in the cluster)."""
    return f"{node_id}:{request_id}"
