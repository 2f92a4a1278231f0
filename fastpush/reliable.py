"""The reliable subprotocols' session bookkeeping that lives in Python: reconnection tokens and
their check, the state a session carries to another node (encode, decode, restore), and what a
recovered session is sent again.

The per-message part stays in the compiled hot path (fastpush._fanout): each reliable delivery
is numbered, kept in the connection's `replay` deque until the client acknowledges it, and
`Connection.resend_unacknowledged` writes the kept frames again. This module works on those
fields and on the session's two tokens through `Resumable`, and imports neither picows nor
the compiled module: a hand-over can be encoded, decoded and checked without a socket.
"""
from __future__ import annotations

import collections
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from .expiry import NEVER, local_deadline, wall_time
from .protocol.json_protocol import GroupSource, ServerSource, StreamInfo
from .protocol.payload import Payload
from .protocol.variants import RELIABLE_VARIANTS

__all__ = ["RELIABLE_VARIANTS", "is_reliable", "new_token", "rotate_token", "refusal",
           "Buffered", "SessionState", "export_state", "decode_state", "restore", "resend", "continue_resend",
           "Resumable", "Replayed"]

TOKEN_BYTES = 24  # of randomness in a reconnection token (32 URL-safe characters)
_SERVER_SOURCE = ServerSource()


def is_reliable(variant: int) -> bool:
    return variant in RELIABLE_VARIANTS


class Replayed(Protocol):
    """One kept delivery (fastpush._fanout.Frames): the send, and what it counts against the buffer."""

    @property
    def payload(self) -> Any: ...
    @property
    def source(self) -> Any: ...
    @property
    def cost(self) -> int: ...
    @property
    def deadline(self) -> float: ...


class Resumable(Protocol):
    """What this module reads and writes on a connection: the compiled Connection's identity and
    reliable fields, and the session's tokens (fastpush.session.ClientSession)."""

    connection_id: str
    user_id: str | None
    subprotocol: str | None
    variant: int
    groups: set[str] | frozenset[str]
    roles: set[str] | frozenset[str]
    sequence_id: int
    acked_sequence_id: int
    replay: Any  # a deque of Replayed, or None before the first reliable delivery
    replay_bytes: int
    replay_overflowed: bool
    replay_max_messages: int
    replay_max_bytes: int
    resend_next: int
    keep_session: bool
    unsent_from: int
    reconnection_token: str | None
    previous_token: str | None

    def flush(self) -> None: ...
    def resend_unacknowledged(self, max_queued: int) -> bool: ...
    def mark_unsent(self) -> None: ...


# --- reconnection tokens ----------------------------------------------------------------------
def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def rotate_token(session: Resumable) -> str:
    """A fresh token for the `connected` message of every (re)connection; the one before stays
    valid (see `refusal`)."""
    session.previous_token = session.reconnection_token
    session.reconnection_token = token = new_token()
    return token


def refusal(session: Resumable, token: str | None, subprotocol: str | None) -> str | None:
    """Why `session` cannot be resumed with `token` over `subprotocol`, or None if it can. The token
    before the current one is accepted too: a drop may hit after a recovery's upgrade but before
    the client has read the `connected` message carrying the new one."""
    if not session.keep_session:
        return "The session has ended."
    if session.replay_overflowed:
        return "The reliable message buffer overflowed; the session cannot be resumed."
    if subprotocol != session.subprotocol:
        return f"The session speaks {session.subprotocol}, not {subprotocol}."
    if token is None or not any(known is not None and hmac.compare_digest(token.encode(), known.encode())
                                for known in (session.reconnection_token, session.previous_token)):
        return "The reconnection token does not match the session."
    return None


# --- hand-over to another node ----------------------------------------------------------------
class Buffered(msgspec.Struct, array_like=True):
    payload: Payload
    group: str | None  # None: a server message
    from_user_id: str | None
    expires_at: float = NEVER  # on the wall clock, as between nodes (fastpush.expiry)
    stream: StreamInfo | None = None  # a group stream's fragment or end


class SessionState(msgspec.Struct, array_like=True):
    """A reliable session moving to the node its client recovered onto (msgpack; the field order
    is the wire format between nodes)."""

    connection_id: str
    user_id: str | None
    subprotocol: str | None
    variant: int
    roles: list[str]
    groups: list[str]
    sequence_id: int
    acked_sequence_id: int
    replay: list[Buffered]
    connection_state: str | None
    unsent_from: int = 0  # see fastpush._fanout.Connection.unsent_from; 0 from an older node: none known
    # The client's token and the one before (see `refusal`): it may come back to the session's new
    # node, or try again elsewhere, with either.
    reconnection_token: str | None = None
    previous_token: str | None = None


_encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(SessionState).decode


def export_state(session: Resumable, connection_state: str | None, *, with_replay: bool = True) -> bytes:
    """The session as another node needs it: who, where, its counters and every unacknowledged
    delivery, expired ones included (their numbers are positions in the buffer), each with its
    expiry, unless `with_replay` is False (`connection_state`: what the upstream set with
    ce-connectionState). Only a whole export notes what its socket never got (mark_unsent):
    the identity is asked for while the session may still be serving its client."""
    if with_replay:
        session.mark_unsent()
    kept = (session.replay or ()) if with_replay else ()
    buffered = [Buffered(f.payload, getattr(f.source, "group", None), getattr(f.source, "from_user_id", None),
                         wall_time(f.deadline), getattr(f.source, "stream", None)) for f in kept]
    return _encode_state(SessionState(session.connection_id, session.user_id, session.subprotocol, session.variant,
                                      sorted(session.roles), sorted(session.groups), session.sequence_id,
                                      session.acked_sequence_id, buffered, connection_state, session.unsent_from,
                                      session.reconnection_token, session.previous_token))


def decode_state(data: bytes) -> SessionState:
    return _decode_state(data)


def restore(session: Resumable, state: SessionState, frames: Callable[[Payload, Any, float], Replayed]) -> None:
    """Give a connection made from `state`'s identity the handed-over counters and replay buffer,
    ahead of what it buffered since it moved here (numbered from 1: a sequenceId is its place in
    the buffer, so the numbers simply go on after the holder's; none of those reached a socket);
    `frames` makes one kept delivery (fastpush._fanout.Frames). A delivery that expired on its way
    keeps its place, with a deadline already passed: the resend decides what it costs. Past the
    session's replay limits together it cannot be resumed (replay_overflowed), as if it had
    overflowed on one node."""
    since = session.replay or ()
    session.sequence_id = state.sequence_id + len(since)
    session.acked_sequence_id = state.acked_sequence_id
    session.unsent_from = state.unsent_from
    replay: collections.deque[Replayed] = collections.deque()
    for entry in state.replay:
        source = (GroupSource(entry.group, entry.from_user_id, entry.stream) if entry.group is not None
                  else _SERVER_SOURCE)
        deadline = local_deadline(entry.expires_at)
        kept = frames(entry.payload, source, time.monotonic() if deadline is None else deadline)
        replay.append(kept)
        session.replay_bytes += kept.cost
    replay.extend(since)
    session.replay = replay
    if len(replay) > session.replay_max_messages or session.replay_bytes > session.replay_max_bytes:
        session.replay_overflowed = True


# --- what a recovered session is sent again -----------------------------------------------------
def resend(session: Resumable, max_queued: int) -> None:
    """After the `connected` message of a recovery: every unacknowledged delivery again, in order,
    with its sequenceId, from the first (a resend the last socket broke off starts over: the new
    one has none of it), expired ones left out. What waits in this turn's coalesced bytes
    (`connected`) goes first; the resend stops once the socket holds `max_queued` bytes, and
    `continue_resend` goes on."""
    session.flush()
    session.mark_unsent()
    session.resend_next = 0
    session.resend_unacknowledged(max_queued)


def continue_resend(session: Resumable, max_queued: int) -> None:
    """The socket drained: go on with a resend that stopped (nothing if none is under way)."""
    if session.resend_next:
        session.resend_unacknowledged(max_queued)
