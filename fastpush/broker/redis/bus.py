"""Operations between nodes over Redis pub/sub.

Channels: `h:{hub}` (hub-wide operations; nodes with connections in the hub subscribe),
`g:{hub}:{group}` (nodes with local members subscribe), `n:{node}` (operations for a node's
connections and users, session requests, and replies). A session's move is announced on its hub's
channel (fastpush.broker.redis.handover says why). Where an operation goes follows from its
`route`; whether its publisher waits for every receiving node to confirm it, from `confirmed`
(fastpush.ops). A node confirms once its part is in force: its Redis writes done and its new
subscriptions active, so a send made right after a REST add reaches the new member. Every envelope
carries the wire version; a node acts on no message of another version, nor on bytes that are no
envelope (fastpush.broker.redis.wire).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from ... import ops
from ...lastvalue import LastValuePolicy
from ..base import BrokerHandler
from ..errors import BrokerUnavailable
from ..resp import RedisGone, RespReply
from .link import Link, unavailable
from .registry import ClusterRegistry
from .wire import WIRE_VERSION, DroppedMessages, describe_version, version_of

__all__ = ["OperationBus", "Envelope", "OP", "REPLY", "TAKE_SESSION", "SESSION_MOVED", "CachedGroups", "MARK",
           "split_entry", "decode_envelope"]

log = logging.getLogger("fastpush.broker")
OP, REPLY, TAKE_SESSION, SESSION_MOVED = 0, 1, 2, 3


class Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """On the wire: an operation (with where to confirm it), a reply, a request for a reliable
    session (a client recovering onto another node), or the announcement that one moved."""

    version: int  # WIRE_VERSION (fastpush.broker.redis.wire): always first, whatever the version
    kind: int
    request_id: int = 0
    reply_to: str | None = None  # the node waiting for the reply
    # OP: the operation; REPLY: a result (a session's state); TAKE_SESSION, SESSION_MOVED: its id
    data: bytes | None = None
    ok: bool = True
    hub: str = ""
    token: str = ""  # TAKE_SESSION: the client's reconnection token; SESSION_MOVED: the reservation's
    subprotocol: str | None = None


encode_envelope = msgspec.msgpack.Encoder().encode
decode_envelope = msgspec.msgpack.Decoder(Envelope).decode
MARK = b"\xc1"  # never the first byte of a msgpack value: a numbered entry of the last-value cache


class _Malformed(ValueError):
    """Bytes from Redis that are no message of this node's wire version, though they start as one."""


def split_entry(data: bytes) -> tuple[int, bytes]:
    """A published message as (its number in the last-value cache, its envelope); (0, data) for
    one that is not such an entry (fastpush.broker.redis.lastvalue). A ValueError for a mark
    without a number."""
    if data[:1] != MARK:
        return 0, data
    number, _, envelope = data[1:].partition(b":")
    if not number.isdigit() or len(number) > 19:  # the hub's counter is a Redis integer (63 bits)
        raise _Malformed("a last-value entry without its number")
    return int(number), envelope


class CachedGroups(Protocol):
    """The last-value cache's part of publishing (fastpush.broker.redis.lastvalue)."""

    def policy(self, hub: str, group: str) -> LastValuePolicy | None: ...
    def publish(self, hub: str, group: str, channel: bytes, envelope: bytes,
                policy: LastValuePolicy) -> Awaitable[RespReply]: ...


class Replies:
    """The replies to one request; complete once as many arrived as nodes received it."""

    __slots__ = ("future", "results", "expected")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.results: list[tuple[bool, bytes | None]] = []
        self.expected: int | None = None  # known once PUBLISH has said how many nodes got it

    def add(self, ok: bool, data: bytes | None = None) -> None:
        self.results.append((ok, data))
        self._check()

    def expect(self, count: int) -> None:
        self.expected = count
        self._check()

    def _check(self) -> None:
        if self.expected is not None and len(self.results) >= self.expected and not self.future.done():
            self.future.set_result(None)


class OperationBus:
    def __init__(self, link: Link, registry: ClusterRegistry, confirm_timeout: float) -> None:
        self._link = link
        self._registry = registry
        self._confirm_timeout = confirm_timeout
        self._pending: dict[int, Replies] = {}
        self._next_request = 0
        self.handler: BrokerHandler | None = None
        # The session handover's part (fastpush.broker.redis.handover).
        self.on_take_session: Callable[[Envelope], None] | None = None
        self.on_session_moved: Callable[[Envelope], None] | None = None
        self.cached_groups: CachedGroups | None = None  # sends to cached groups go through its script
        self._dropped = DroppedMessages(link.node_id)

    # --- publishing ------------------------------------------------------------------------
    async def publish(self, op: ops.Op) -> object:
        link = self._link
        link.check()
        request_id, replies = self.expect_replies() if op.confirmed else (0, None)
        message = encode_envelope(Envelope(WIRE_VERSION, OP, request_id, link.node_id if op.confirmed else None,
                                           ops.encode(op)))
        try:
            self._registry.record_user_groups(op)
            receivers = await self.route(op, message)
        except (RedisGone, OSError) as exc:
            self._pending.pop(request_id, None)
            raise unavailable(exc) from None
        if replies is None:
            return None
        if receivers < 0:  # no live node holds that connection
            self._pending.pop(request_id, None)
            return False if op.reports_missing else None
        results = await self.await_replies(request_id, replies, receivers)
        return any(ok for ok, _ in results) if op.reports_missing else None

    async def route(self, op: ops.Op, message: bytes) -> int:
        """Publish to the nodes `op.route` names; how many received it (-1: no node holds the connection)."""
        link, hub = self._link, op.hub.lower()
        match op.route:
            case ops.Route.CONNECTION:
                return await self.to_connection(hub, op.routing_key, message)
            case ops.Route.USER:
                return _count(await link.script("user", 1, link.key("u", hub, op.routing_key), link.prefix, message))
            case ops.Route.GROUP:
                channel = link.channel("g", hub, op.routing_key)
                cached = self.cached_groups
                if cached is not None and isinstance(op, ops.SendToGroup) and op.stream is None and \
                        (policy := cached.policy(hub, op.group)) is not None:
                    return _count(await cached.publish(hub, op.group, channel, message, policy))
                return _count(await link.run("PUBLISH", channel, message))
            case ops.Route.HUB:
                return _count(await link.run("PUBLISH", link.channel("h", hub), message))

    async def to_connection(self, hub: str, connection_id: str, message: bytes) -> int:
        link = self._link
        return _count(await link.script("connection", 1, link.key("c", hub.lower(), connection_id), link.prefix,
                                        message))

    # --- replies ---------------------------------------------------------------------------
    def expect_replies(self) -> tuple[int, Replies]:
        self._next_request += 1
        replies = Replies(asyncio.get_running_loop().create_future())
        self._pending[self._next_request] = replies
        return self._next_request, replies

    def forget(self, request_id: int) -> None:
        self._pending.pop(request_id, None)

    async def await_replies(self, request_id: int, replies: Replies, count: int) -> list[tuple[bool, bytes | None]]:
        replies.expect(count)
        try:
            await asyncio.wait_for(asyncio.shield(replies.future), self._confirm_timeout)
        except TimeoutError:
            raise BrokerUnavailable("A node did not confirm the operation in time.") from None
        finally:
            self._pending.pop(request_id, None)
        return replies.results

    def fail_pending(self) -> None:
        for replies in self._pending.values():
            if not replies.future.done():
                replies.future.set_exception(BrokerUnavailable("The connection to Redis was lost."))

    async def reply(self, reply_to: str, request_id: int, ok: bool, data: bytes | None = None) -> None:
        envelope = Envelope(WIRE_VERSION, REPLY, request_id, ok=ok, data=data)
        await self._link.run("PUBLISH", self._link.channel("n", reply_to), encode_envelope(envelope))

    # --- receiving -------------------------------------------------------------------------
    def on_message(self, channel: bytes, data: bytes) -> None:
        """A message on one of this node's channels: acted on if it is an envelope of this wire
        version, else dropped (counted, logged at most once a minute); it never ends the subscription.
        One function on purpose: every node runs it for every message of the cluster."""
        try:
            number, data = split_entry(data)
            # This version's envelope: a fixarray (0x91-0x9f), its first element WIRE_VERSION (wire.py).
            if len(data) < 2 or data[1] != WIRE_VERSION or not 0x91 <= data[0] <= 0x9F:
                self._drop_other(channel, data)
                return
            envelope = decode_envelope(data)
            kind = envelope.kind
            if kind == OP:
                if envelope.data is None:
                    raise _Malformed("an operation envelope without its operation")
                op = ops.decode(envelope.data)
                if self.handler is not None:
                    if number and isinstance(op, ops.SendToGroup):
                        op = msgspec.structs.replace(op, last_value_seq=number)
                    self._apply(envelope, op, self.handler)
            elif kind == REPLY:
                replies = self._pending.get(envelope.request_id)
                if replies is not None:
                    replies.add(envelope.ok, envelope.data)
            elif kind == TAKE_SESSION:
                if self.on_take_session is not None:
                    self.on_take_session(envelope)
            elif kind == SESSION_MOVED:
                if self.on_session_moved is not None:
                    self.on_session_moved(envelope)
            else:
                raise _Malformed(f"an envelope of unknown kind {kind}")
        except (msgspec.DecodeError, msgspec.ValidationError, _Malformed) as exc:
            self._dropped.drop("malformed", channel, f"not a valid envelope: {exc}")
        except Exception as exc:  # one bad message must not end this node's subscription (and its cluster)
            self._dropped.drop("failed", channel, f"{type(exc).__name__}: {exc}")

    def _drop_other(self, channel: bytes, data: bytes) -> None:
        version = version_of(data)
        if version is None:
            self._dropped.drop("malformed", channel, f"no envelope; this node speaks {WIRE_VERSION}")
        else:
            self._dropped.drop("version", channel, f"wire version {describe_version(version)}; "
                                                   f"this node speaks {WIRE_VERSION}")

    def _apply(self, envelope: Envelope, op: ops.Op, handler: BrokerHandler) -> None:
        link = self._link
        link.collected = []
        try:
            result = handler.apply(op)
        finally:
            writes, link.collected = link.collected, None
        if envelope.reply_to is not None:
            asyncio.get_running_loop().create_task(
                self._confirm(envelope.reply_to, envelope.request_id, result, writes))

    async def _confirm(self, reply_to: str, request_id: int, result: object,
                       writes: list[asyncio.Future[RespReply]]) -> None:
        """Confirm once this node's part is in force: its Redis writes done, its subscriptions active."""
        try:
            await asyncio.gather(*writes)
            await self._link.barrier()
            await self.reply(reply_to, request_id, result is not False)
        except (RedisGone, OSError) as exc:
            log.warning("node %s: could not confirm an operation: %s", self._link.node_id, exc)


def _count(reply: object) -> int:
    """An integer reply (PUBLISH's receivers, a routing script's)."""
    assert isinstance(reply, int)
    return reply
