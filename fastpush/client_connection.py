"""A client's WebSocket as picows sees it: frames in, bytes out, and picows' callbacks.

`ClientConnection` is one object per client: the compiled `_fanout.Connection` (what the fan-out
loop reads and writes) with the socket-free session mixed in (fastpush.session.ClientSession: the
protocol, the reliable session's life, the slow-client policy), whose state lives in this
class's slots. What is left here is what needs the socket: picows' callbacks, and the few things
the session asks of the socket (`deliver`, `send_close`, `drop_socket`, reading paused and
resumed, `is_lost`).
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from picows import WSCloseCode, WSFrame, WSMsgType, WSTransport

from . import conflation, reliable
from .auth.tokens import ClientClaims
from .events.model import EventContext
from .fanout import Connection, Frames, fanout, trim_transport
from .handshake import Accept
from .hub import SERVER_SOURCE, Hub
from .node import Node
from .protocol.payload import Payload
from .session import SESSION_SLOTS, ClientSession, ConnectionSettings

__all__ = ["ClientConnection"]

CLOSE_TIMEOUT_SECONDS = 2.0  # how long a close frame waits for the client's answer


class ClientConnection(ClientSession, Connection):
    """Everything the fan-out loop reads lives in the compiled base, the protocol in the session;
    this is the socket."""

    __slots__ = SESSION_SLOTS
    if TYPE_CHECKING:
        _hub: Hub

    def __init__(self, node: Node, hub: Hub, accept: Accept, connection_id: str, settings: ConnectionSettings,
                 event_ctx: EventContext | None = None):
        super().__init__(connection_id, accept.claims.user_id, hub.name, accept.subprotocol, accept.variant)
        self._init_session(node, hub, accept, settings, event_ctx)

    @classmethod
    def adopt(cls, node: Node, hub: Hub, settings: ConnectionSettings, identity: bytes) -> ClientConnection:
        """A session moving here from another node, made from its identity (fastpush.reliable's state
        without the buffered messages): it joins its hub when it moves (`arrived`), `take_state`
        then gives it the holder's buffer, and its client's socket resumes it."""
        state = reliable.decode_state(identity)
        claims = ClientClaims(state.user_id, tuple(state.roles), tuple(state.groups))
        conn = cls(node, hub, Accept(hub.name, state.subprotocol, state.variant, claims), state.connection_id,
                   settings)
        conn.reconnection_token, conn.previous_token = state.reconnection_token, state.previous_token
        return conn

    def take_state(self, identity: bytes, data: bytes) -> None:
        """The holder's state as it gave the session up (fastpush.broker.redis.handover): its counters
        and buffered messages go ahead of what arrived here since the move, and what changed on the
        holder between `identity` and the move (roles, groups, the upstream's connection state)
        applies here too; a change made here since the move stays."""
        before, state = reliable.decode_state(identity), reliable.decode_state(data)
        reliable.restore(self, state, Frames)
        self.reconnection_token, self.previous_token = state.reconnection_token, state.previous_token
        if state.connection_state is not None:
            self._context().state = state.connection_state
        granted, revoked = set(state.roles) - set(before.roles), set(before.roles) - set(state.roles)
        if granted or revoked:
            self.roles = (set(self.roles) | granted) - revoked
            self._hub.registry.roles_changed(self._hub.name, self)
        for group in set(state.groups) - set(before.groups):
            self._hub.join(self, group)
        for group in set(before.groups) - set(state.groups):
            self._hub.leave(self, group)

    # --- picows callbacks ---------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.last_seen = time.monotonic()
        previous, self.transport = self.transport, transport
        trim_transport(transport)
        transport.underlying_transport.set_write_buffer_limits(high=self._settings.socket_high_water_bytes)
        self.max_outbound = self._settings.max_outbound_bytes
        self.paused = False
        if previous is not None and not previous.is_disconnected:  # the client noticed the drop before the server did
            previous.disconnect(False)
        self.opened(resumed=previous is not None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if transport is self.transport:  # else a socket this session has already moved away from
            self.lost()
            if self.keep_session:  # the latest values are numbered now, after what the socket never got
                conflation.drain(self, self._write_one, everything=True)
            else:
                conflation.drop(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.last_seen = time.monotonic()
        msg_type = frame.msg_type
        if msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:  # the client's own close, not its answer to ours
                self.closed_by_client(_close_code(frame))
                self.flush()
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        if msg_type == WSMsgType.PING or msg_type == WSMsgType.PONG or transport.is_close_frame_sent:
            return  # nothing a client sends after its close frame is read is acted on
        self.receive(msg_type.value, frame)

    def pause_writing(self) -> None:
        """The socket holds more than its small high-water mark: frames wait in our own bounded
        queue from now on (recovery's resend goes on writing directly, with its own flow control)."""
        self.pause()

    def resume_writing(self) -> None:
        self.resume()
        reliable.continue_resend(self, self._settings.socket_high_water_bytes)
        self.flush_conflated()

    def flush_conflated(self) -> None:
        """Write the conflated groups' latest values that wait, as far as the socket takes them
        (the socket drained, or a rate limit came round: fastpush.conflation)."""
        if self.conflation is not None:
            conflation.drain(self, self._write_one)

    def _write_one(self, frames: object) -> None:
        assert isinstance(frames, Frames)
        fanout((self,), frames)

    # --- what the session asks of the socket ----------------------------------------------------
    @property
    def is_lost(self) -> bool:
        return self.transport is None or self.transport.is_disconnected

    def deliver(self, payload: Payload) -> None:
        fanout((self,), Frames(payload, SERVER_SOURCE))

    def send_close(self, code: int, reason: str) -> None:
        transport = self.transport
        if transport is None:  # the session checks is_open first
            return
        self.flush()  # what is queued for this turn goes before the close frame
        transport.send_close(WSCloseCode(code), _clip_reason(reason))
        # The client answers with its own close frame (see on_ws_frame); do not wait forever.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, transport.disconnect)

    def drop_socket(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.disconnect(False)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()


def _clip_reason(reason: str) -> bytes:
    """A close reason must fit a control frame: at most 123 bytes of UTF-8."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    return raw[:123].decode(errors="ignore").encode()


def _close_code(frame: WSFrame) -> int:
    """The code of a client's close frame (any the client chose, not only those picows names)."""
    code: object = frame.get_close_code()
    return code.value if isinstance(code, WSCloseCode) else int(code)  # type: ignore[call-overload]
