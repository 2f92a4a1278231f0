"""A client's WebSocket as picows sees it: the listener that turns frames into hub operations,
and, for the reliable subprotocol, the session that outlives a dropped socket."""
from __future__ import annotations

import asyncio
import collections
import hmac
import inspect
import logging
import secrets
import time

import msgspec
from dataclasses import dataclass

from picows import WSFrame, WSMsgType, WSTransport

from . import fanout as _fanout
from .fanout import Connection, fanout, trim_transport
from .broker.errors import BrokerUnavailable
from .events.model import EventContext, EventFailed
from .auth.tokens import ClientClaims
from .handshake import Accept
from .hub import Hub, allowed, close, frames_for
from .permissions import Permission
from .protocol.close_codes import CloseCode
from .protocol.codecs import codec_for
from .protocol.json_protocol import (
    Ignored, InvalidRequest, Invoke, JoinGroup, LeaveGroup, Ping, ProtocolViolation, SendEvent,
    GroupSource, SendToGroup, SequenceAck, ServerSource, encode_invoke_error,
)
from .protocol.names import event_error, group_error, is_valid_event, is_valid_group
from .protocol.payload import DataType, Payload

__all__ = ["ClientConnection", "ConnectionSettings", "SessionState"]

log = logging.getLogger("fastpush.ws")
ACK_REPEAT_SECONDS = 0.005
# Bytes the socket's transport may hold before frames wait in the connection's own queue, where a
# slow client's backlog can be dropped ahead of its close frame (the transport's cannot).
SOCKET_HIGH_WATER_BYTES = 64 * 1024
MAX_EVENTS_IN_FLIGHT = 64  # user events of one connection waiting for the upstream, before reading pauses
_SERVER = ServerSource()


@dataclass(slots=True)
class ConnectionSettings:
    """Per-server knobs every connection reads."""

    recovery_window_seconds: float = 30.0  # how long a reliable session waits for its client
    max_outbound_bytes: int = 4 * 1024 * 1024  # queued beyond this, a client is too slow: closed
    remembered_ack_ids: int = 4096  # per connection, to answer a repeated ackId with Duplicate
    replay_max_messages: int = 1000  # unacknowledged messages kept per reliable connection
    replay_max_bytes: int = 16 * 1024 * 1024
    max_message_bytes: int = 1024 * 1024  # one client message, however many fragments it comes in
    max_groups_per_connection: int = 1000  # groups a client may join itself


class _Buffered(msgspec.Struct, array_like=True):
    payload: Payload
    group: str | None  # None: a server message
    from_user_id: str | None


class SessionState(msgspec.Struct, array_like=True):
    """A reliable session moving to the node its client recovered onto."""

    connection_id: str
    user_id: str | None
    subprotocol: str | None
    variant: int
    roles: list[str]
    groups: list[str]
    sequence_id: int
    acked_sequence_id: int
    replay: list[_Buffered]
    connection_state: str | None


_encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(SessionState).decode


class ClientConnection(Connection):
    """Everything the fan-out loop reads lives in the compiled base; this adds frame handling."""

    __slots__ = ("_hub", "_settings", "_codec", "_token_groups", "_raw_group", "_raw_no_echo", "_fragments",
                 "_fragment_type", "_fragment_bytes", "reconnection_token", "_expiry", "_ack_ids", "_event_ctx", "_event_tail", "_events_in_flight",
                 "_adopted", "_previous_token", "_repeat_acks", "address", "close_code", "messages_in", "bytes_in",
                 "_connected_at")

    def __init__(self, hub: Hub, accept: Accept, connection_id: str, settings: ConnectionSettings,
                 event_ctx: EventContext | None = None):
        super().__init__(connection_id, accept.claims.user_id, hub.name, accept.subprotocol, accept.variant)
        self._hub = hub
        self._settings = settings
        self.replay_max_messages = settings.replay_max_messages
        self.replay_max_bytes = settings.replay_max_bytes
        self._codec = codec_for(accept.variant)
        if accept.claims.roles:
            self.roles = set(accept.claims.roles)
        self._token_groups = accept.claims.groups
        self._raw_group = accept.raw_send_group
        self._raw_no_echo = accept.raw_no_echo
        self._fragments: list[bytes] | None = None
        self._fragment_type = WSMsgType.TEXT
        self._fragment_bytes = 0
        self.reconnection_token: str | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._ack_ids: dict[int, None] | None = None  # made on the first ackId
        self._event_ctx = event_ctx  # made on first use when the connect event did not make it
        self._event_tail: asyncio.Task | None = None  # the last user event in flight, to keep their order
        self._events_in_flight = 0
        self._adopted = False  # a session handed over by another node, resumed by on_ws_connected
        self._previous_token: str | None = None
        self._repeat_acks = accept.repeat_acks
        self.keep_session = accept.variant in _fanout.RELIABLE_VARIANTS
        self.address = accept.address
        self.close_code: int | None = None  # the close code of close_reason; None: no close frame
        self.messages_in = 0  # whole data messages from the client, and their bytes, for the disconnect line
        self.bytes_in = 0
        self._connected_at = 0.0

    @property
    def groups_to_join(self) -> tuple[str, ...]:
        """The groups it joins when its socket arrives (token, connect handler, or a moved session)."""
        return tuple(self._token_groups)

    def recovery_refusal(self, token: str | None, subprotocol: str | None) -> str | None:
        """Why this session cannot be resumed with `token`, or None if it can. The token before
        the current one is accepted too: a drop may hit after a recovery's upgrade but before
        the client has read the `connected` message carrying the new one."""
        if not self.keep_session:
            return "The session has ended."
        if self.replay_overflowed:
            return "The reliable message buffer overflowed; the session cannot be resumed."
        if subprotocol != self.subprotocol:
            return f"The session speaks {self.subprotocol}, not {subprotocol}."
        if token is None or not any(known is not None and hmac.compare_digest(token.encode(), known.encode())
                                    for known in (self.reconnection_token, self._previous_token)):
            return "The reconnection token does not match the session."
        return None

    # --- picows callbacks ---------------------------------------------------------------------
    def hand_over(self, token: str | None, subprotocol: str | None) -> bytes | None:
        """Give this reliable session to another node (its client recovered there): its state,
        then end it here without a `disconnected` event, as it lives on."""
        if self.recovery_refusal(token, subprotocol) is not None:
            return None
        buffered = [_Buffered(f.payload, getattr(f.source, "group", None), getattr(f.source, "from_user_id", None))
                    for f in (self.replay or ())]
        state = SessionState(self.connection_id, self.user_id, self.subprotocol, self.variant, sorted(self.roles),
                             sorted(self.groups), self.sequence_id, self.acked_sequence_id, buffered,
                             self._event_ctx.state if self._event_ctx is not None else None)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.keep_session = False
        self._hub.remove_connection(self)
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.disconnect(False)
        return _encode_state(state)

    @classmethod
    def adopt(cls, hub: Hub, settings: ConnectionSettings, data: bytes) -> "ClientConnection":
        """The session another node handed over, to be resumed when its client's socket arrives."""
        state = _decode_state(data)
        claims = ClientClaims(state.user_id, tuple(state.roles), tuple(state.groups))
        conn = cls(hub, Accept(hub.name, state.subprotocol, state.variant, claims), state.connection_id, settings)
        conn.sequence_id = state.sequence_id
        conn.acked_sequence_id = state.acked_sequence_id
        conn.replay = collections.deque()
        for entry in state.replay:
            source = GroupSource(entry.group, entry.from_user_id) if entry.group is not None else _SERVER
            frames = frames_for(entry.payload, source)
            conn.replay.append(frames)
            conn.replay_bytes += frames.cost
        if state.connection_state is not None:
            conn._context().state = state.connection_state
        conn._adopted = True
        return conn

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.last_seen = time.monotonic()
        previous, self.transport = self.transport, transport
        trim_transport(transport)
        recovering = previous is not None or self._adopted
        transport.underlying_transport.set_write_buffer_limits(high=min(SOCKET_HIGH_WATER_BYTES,
                                                                        self._settings.max_outbound_bytes))
        self.max_outbound = self._settings.max_outbound_bytes
        self.paused = False
        if recovering:
            self.close_reason = self.close_code = None  # the session goes on
        if previous is not None:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
            if not previous.is_disconnected:  # the client noticed the drop before the server did
                previous.disconnect(False)
        else:
            self._hub.add_connection(self, self._token_groups)
            self._token_groups = ()
            if self._hub.events is not None and not self._adopted:
                self._hub.events.connected(self._context())
            self._adopted = False
            self._connected_at = self.last_seen
        self._log_connected(recovering)
        codec = self._codec
        if codec is not None:
            if self.variant in _fanout.RELIABLE_VARIANTS:
                self._previous_token = self.reconnection_token
                self.reconnection_token = secrets.token_urlsafe(24)
            self.discard_pending()
            self.send_frame(codec.opcode, codec.encode_connected(self.connection_id, self.user_id, self.reconnection_token))
        if recovering:
            self.flush()  # `connected` may wait in this turn's coalesced bytes: it goes before the resend
            self.resend_unacknowledged(self._settings.max_outbound_bytes)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if transport is not self.transport:
            return  # a socket this session has already moved away from
        if self.close_reason is None:
            self.close_reason = "The connection was lost." if self.keep_session else "The connection closed."
        if self.keep_session:
            window = self._settings.recovery_window_seconds
            self._expiry = asyncio.get_running_loop().call_later(window, self.end_session)
        else:
            self.end_session()

    def end_session(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.keep_session = False
        if not self._hub.remove_connection(self):
            return
        if self._hub.events is not None:
            self._hub.events.disconnected(self._context(), self.close_reason or "The connection closed.")
        self._log_disconnected()

    def _fields(self, event: str) -> dict[str, object]:
        return {"event": event, "hub": self.hub, "connection_id": self.connection_id, "user": self.user_id,
                "subprotocol": self.subprotocol, "address": self.address}

    def _log_connected(self, recovering: bool) -> None:
        fields = self._fields("reconnected" if recovering else "connected")
        log.info("connection %(connection_id)s %(event)s: hub %(hub)s, user %(user)s, subprotocol "
                 "%(subprotocol)s, from %(address)s", fields, extra=fields)

    def _log_disconnected(self) -> None:
        """One line per ended session. Only what came in is counted: counting what goes out would
        add work to every delivery of the fan-out loop."""
        fields = self._fields("disconnected")
        fields.update(code=self.close_code if self.close_code is not None else int(CloseCode.ABNORMAL_CLOSURE),
                      reason=self.close_reason or "The connection closed.",
                      duration_s=round(time.monotonic() - self._connected_at, 3) if self._connected_at else 0.0,
                      messages_in=self.messages_in, bytes_in=self.bytes_in)
        log.info("connection %(connection_id)s disconnected: hub %(hub)s, user %(user)s, from %(address)s, "
                 "code %(code)s (%(reason)s) after %(duration_s).1f s, %(messages_in)d messages "
                 "(%(bytes_in)d bytes) in", fields, extra=fields)

    def _context(self) -> EventContext:
        if self._event_ctx is None:
            self._event_ctx = EventContext(self._hub.name, self.connection_id, self.user_id, self.subprotocol)
        return self._event_ctx

    def on_replay_overflow(self) -> None:
        fields = self._fields("replay_overflow")
        fields.update(messages=len(self.replay), bytes=self.replay_bytes)
        log.warning("connection %(connection_id)s: reliable buffer full (%(messages)d messages, %(bytes)d bytes); "
                    "closing (hub %(hub)s, user %(user)s, from %(address)s)", fields, extra=fields)
        close(self, CloseCode.POLICY_VIOLATION, "The reliable message buffer is full.")
        if self.transport.is_disconnected:
            self.end_session()

    def pause_writing(self) -> None:
        """The socket holds more than its small high-water mark: frames wait in our own bounded
        queue from now on (recovery's resend goes on writing directly, with its own flow control)."""
        self.pause()

    def resume_writing(self) -> None:
        self.resume()
        if self.resend_next:
            self.resend_unacknowledged(self._settings.max_outbound_bytes)

    def on_outbound_overflow(self) -> None:
        """More than max_outbound_bytes wait for a client that does not read: it is too slow. What
        waited is dropped already, so the close frame is next after what its socket holds; a
        reliable client recovers the dropped messages from its replay buffer."""
        if self.close_reason is not None or self.transport is None or self.transport.is_close_frame_sent:
            return
        fields = self._fields("slow_client")
        fields["max_outbound_bytes"] = self._settings.max_outbound_bytes
        log.warning("connection %(connection_id)s: more than %(max_outbound_bytes)d bytes queued; closing a slow "
                    "client (hub %(hub)s, user %(user)s, from %(address)s)", fields, extra=fields)
        self._hub.slow_client_closes += 1
        close(self, CloseCode.SLOW_CLIENT, "The client is too slow to receive its messages.", keep_session=True)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.last_seen = time.monotonic()
        msg_type = frame.msg_type
        if msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:  # the client's own close, not its answer to ours
                self.keep_session = False
                if self.close_reason is None:
                    self.close_code = int(frame.get_close_code())
                    self.close_reason = f"The client closed the connection ({self.close_code})."
                self.flush()
                transport.send_close(CloseCode.NORMAL)
            transport.disconnect()
            return
        if msg_type == WSMsgType.PING or msg_type == WSMsgType.PONG or transport.is_close_frame_sent:
            return  # nothing a client sends after its close frame is read is acted on
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            close(self, CloseCode.PROTOCOL_ERROR, "A reserved bit is set, but no extension was negotiated.")
            return
        if msg_type == WSMsgType.CONTINUATION:
            msg_type = self._fragment_type
        data = self._assemble(frame)
        if data is None:
            return
        self.messages_in += 1
        self.bytes_in += len(data)
        codec = self._codec
        if codec is None:
            if msg_type == WSMsgType.TEXT and not _is_utf8(data):
                close(self, CloseCode.INVALID_PAYLOAD, "A text message that is not valid UTF-8.")
                return
            self._on_raw(msg_type, data)
        elif msg_type != codec.opcode:
            kind = "Binary" if msg_type == WSMsgType.BINARY else "Text"
            close(self, CloseCode.UNSUPPORTED_DATA, f"{kind} frames are not supported by the {self.subprotocol} subprotocol.")
        else:
            self._on_request(data)

    def _assemble(self, frame: WSFrame) -> bytes | None:
        """Return a whole message, joining fragmented frames; None while a message is incomplete
        or when the connection was closed for breaking the rules (RFC 6455 §5.4, the size limit)."""
        limit = self._settings.max_message_bytes
        if frame.msg_type == WSMsgType.CONTINUATION:
            fragments = self._fragments
            if fragments is None:
                close(self, CloseCode.PROTOCOL_ERROR, "A continuation frame without a first fragment.")
                return None
            self._fragment_bytes += frame.payload_size
            if self._fragment_bytes > limit:
                self._fragments = None
                close(self, CloseCode.MESSAGE_TOO_BIG, f"The message is larger than {limit} bytes.")
                return None
            fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return None
            self._fragments = None
            return b"".join(fragments)
        if self._fragments is not None:
            self._fragments = None
            close(self, CloseCode.PROTOCOL_ERROR, "A new message began before the fragmented one ended.")
            return None
        if frame.payload_size > limit:
            close(self, CloseCode.MESSAGE_TOO_BIG, f"The message is larger than {limit} bytes.")
            return None
        if not frame.fin:
            self._fragments = [frame.get_payload_as_bytes()]
            self._fragment_type = frame.msg_type
            self._fragment_bytes = frame.payload_size
            return None
        return frame.get_payload_as_bytes()

    # --- raw clients --------------------------------------------------------------------------
    def _on_raw(self, msg_type: WSMsgType, data: bytes) -> None:
        payload = Payload(DataType.BINARY if msg_type == WSMsgType.BINARY else DataType.TEXT, data)
        group = self._raw_group
        if group is None:
            events = self._hub.events
            if events is not None and events.handles_user_event("message"):
                self._queue_event("message", payload, None)
            else:
                close(self, CloseCode.INTERNAL_ERROR, "No event handler is configured for event 'message'.")
        elif not allowed(self, Permission.SEND_TO_GROUP, group):
            close(self, CloseCode.POLICY_VIOLATION, f"No permission to send to group '{group}'.")
        else:
            excluded = (self.connection_id,) if self._raw_no_echo else None
            self._settle(self._hub.send_to_group(group, payload, excluded, from_user_id=self.user_id), None)

    # --- subprotocols (JSON and protobuf) -------------------------------------------------------
    def _on_request(self, data: bytes) -> None:
        try:
            request = self._codec.parse(data)
        except ProtocolViolation as exc:
            close(self, exc.code, exc.reason)
            return
        except InvalidRequest as exc:
            self._ack(exc.ack_id, exc.name, exc.message)
            return
        kind = type(request)
        if kind is SequenceAck:
            self.acknowledge(request.sequence_id)
            return
        ack_id = getattr(request, "ack_id", None)
        if ack_id is not None and self._seen(ack_id):
            self._ack(ack_id, "Duplicate", f"Message with ack-id: {ack_id} has been processed.")
            return
        if kind is SendToGroup:
            self._send_to_group(request)
        elif kind is JoinGroup or kind is LeaveGroup:
            self._join_or_leave(request)
        elif kind is Ping:
            self.send_frame(self._codec.opcode, self._codec.encode_pong())
        elif kind is SendEvent:
            events = self._hub.events
            if not is_valid_event(request.event):
                self._ack(ack_id, "BadRequest", event_error(request.event))
            elif events is not None and events.handles_user_event(request.event):
                self._queue_event(request.event, request.payload, ack_id)
            else:  # no handler wants it: accepted and dropped, as the service does
                self._ack(ack_id)
        elif kind is Invoke:
            self.send_frame(WSMsgType.TEXT, encode_invoke_error(
                request.invocation_id, "BadRequest", "No event handler is configured for invocations."))
        elif kind is not Ignored:
            raise AssertionError(f"unhandled request {request!r}")

    # --- user events ----------------------------------------------------------------------------
    def _queue_event(self, name: str, payload: Payload, ack_id: int | None) -> None:
        """Events of one connection reach the handler one at a time, in order; a slow handler
        delays only this connection's events, never anybody's pushes. Past MAX_EVENTS_IN_FLIGHT
        waiting events the socket is not read until they drain (TCP pushes back on the client)."""
        previous = self._event_tail
        self._event_tail = task = asyncio.get_running_loop().create_task(
            self._run_event(previous, name, payload, ack_id))
        self._hub.events.track(task)
        self._events_in_flight += 1
        if self._events_in_flight == MAX_EVENTS_IN_FLIGHT and self.transport is not None:
            self.transport.underlying_transport.pause_reading()
        task.add_done_callback(self._event_done)

    def _event_done(self, _task: asyncio.Task) -> None:
        self._events_in_flight -= 1
        if self._events_in_flight == MAX_EVENTS_IN_FLIGHT // 2 and self.transport is not None \
                and not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()

    async def _run_event(self, previous: asyncio.Task | None, name: str, payload: Payload, ack_id: int | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))
        try:
            reply = await self._hub.events.user_event(self._context(), name, payload)
        except EventFailed:  # logged where it failed (the upstream, the dispatcher)
            if self._codec is None:
                close(self, CloseCode.INTERNAL_ERROR, f"The event handler for '{name}' failed.")
            else:
                self._ack(ack_id, "InternalServerError", f"The event handler for '{name}' failed.")
            return
        if reply is not None and reply.state is not None:
            self._context().state = reply.state
        if reply is not None and reply.payload is not None and self.is_open:
            if self._codec is None:
                opcode = WSMsgType.BINARY if reply.payload.is_binary else WSMsgType.TEXT
                self.send_frame(opcode, reply.payload.data)
            else:
                fanout((self,), frames_for(reply.payload, _SERVER))
        self._ack(ack_id)

    def _seen(self, ack_id: int) -> bool:
        """Remember ackIds (the newest few thousand) so a repeated one is answered, not redone."""
        ack_ids = self._ack_ids
        if ack_ids is None:
            ack_ids = self._ack_ids = {}
        if ack_id in ack_ids:
            return True
        ack_ids[ack_id] = None
        if len(ack_ids) > self._settings.remembered_ack_ids:
            del ack_ids[next(iter(ack_ids))]
        return False

    def _send_to_group(self, request: SendToGroup) -> None:
        group = request.group
        if not is_valid_group(group):
            self._ack(request.ack_id, "BadRequest", group_error(group))
        elif not allowed(self, Permission.SEND_TO_GROUP, group):
            self._ack(request.ack_id, "Forbidden", f"The client does not have permission to send to group '{group}'.")
        else:
            excluded = (self.connection_id,) if request.no_echo else None
            self._settle(self._hub.send_to_group(group, request.payload, excluded, from_user_id=self.user_id),
                         request.ack_id)

    def _join_or_leave(self, request: JoinGroup | LeaveGroup) -> None:
        group = request.group
        verb = "join" if type(request) is JoinGroup else "leave"
        limit = self._settings.max_groups_per_connection
        if not is_valid_group(group):
            self._ack(request.ack_id, "BadRequest", group_error(group))
        elif not allowed(self, Permission.JOIN_LEAVE_GROUP, group):
            self._ack(request.ack_id, "Forbidden", f"The client does not have permission to {verb} group '{group}'.")
        elif verb == "join" and group not in self.groups and len(self.groups) >= limit:
            self._ack(request.ack_id, "BadRequest", f"The connection is already in {limit} groups, the most allowed.")
        else:
            change = self._hub.join(self, group) if verb == "join" else self._hub.leave(self, group)
            self._settle(change, request.ack_id)

    def _settle(self, result, ack_id: int | None) -> None:
        """Ack now, or once a remote broker has taken the operation (an error ack if it cannot)."""
        if not inspect.isawaitable(result):
            self._ack(ack_id)
            return

        async def later():
            try:
                await result
            except BrokerUnavailable as exc:
                self._ack(ack_id, "InternalServerError", str(exc))
            else:
                self._ack(ack_id)
        asyncio.get_running_loop().create_task(later())

    def _ack(self, ack_id: int | None, error_name: str | None = None, message: str = "") -> None:
        if ack_id is None or not self.is_open:
            return
        ack = self._codec.encode_ack(ack_id, error_name, message)
        self.send_frame(self._codec.opcode, ack)
        if self._repeat_acks:
            # azure-messaging-webpubsubclient 1.1 can miss an ack that arrives before its sending
            # thread waits for it, then blocks for its whole ack timeout (30 s). Sent once more a
            # moment later, the ack wakes it; the SDKs ignore an ackId they no longer wait for.
            asyncio.get_running_loop().call_later(ACK_REPEAT_SECONDS, self._repeat_ack, ack)

    def _repeat_ack(self, ack: bytes) -> None:
        if self.is_open:
            self.send_frame(self._codec.opcode, ack)


def _is_utf8(data: bytes) -> bool:
    """RFC 6455 §8.1: a text message must be valid UTF-8 (else close 1007)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
