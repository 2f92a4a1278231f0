"""One client's session, without its socket: frames in; acks, replies, operations, joins, events
and closes out.

`ClientSession` is what the service does with a client connection: it joins fragments and
enforces RFC 6455's rules on data frames and the message size limit, parses subprotocol requests
and answers them (ack ids and Duplicate, sendToGroup / joinGroup / leaveGroup checks, ping, user
events in order with back-pressure; invocations beside them, bounded and cancellable; group
streams (fastpush.streams); group state refused as the spec says),
handles raw clients, keeps a reliable client's session for its recovery window (fastpush.reliable
has the bookkeeping), and applies the slow-client and buffer-full policies, with their log lines.

It is a mixin without storage of its own. A connection is one object: the compiled
`_fanout.Connection` holds what the fan-out loop reads, and the class that mixes this in
(fastpush.client_connection.ClientConnection, the picows listener) declares SESSION_SLOTS for the
session's state, so a session costs no second object (a separate one per connection would cost
memory at every connection, for nothing the server needs).

What a session asks for goes through a small interface, so it can be driven and observed
without a socket (tests/unit/test_session.py does):

- its hub (`SessionHub`) and node (`SessionNode`): membership, user events, and operations
  submitted to the cluster;
- its connection: the compiled base's `send_frame` (a frame in order with the broadcasts),
  `is_open`, `flush`, `discard_pending`, `acknowledge`, `resend_unacknowledged`; and from the
  socket side (the listener): `deliver` (a server message through the fan-out path, numbered
  for reliable clients), `send_close`, `drop_socket`, `pause_reading`, `resume_reading` and
  `is_lost`. See `ClientSession`'s declarations.

This module imports neither picows nor the compiled module (tests check it).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, assert_never

from . import ops, reliable
from .broker.errors import BrokerUnavailable
from .events.dispatcher import HubEvents
from .events.model import EventContext, EventFailed, InvocationFailed
from .expiry import expires_at
from .handshake import Accept
from .invocations import Invocations
from .metrics.counters import COUNTERS
from .outcome import Outcome, finish
from .permissions import Permission, grants
from .protocol.close_codes import CloseCode
from .protocol.codecs import Codec, codec_for
from .protocol.json_protocol import (
    CancelInvocation,
    GroupState,
    Ignored,
    InvalidInvocation,
    InvalidRequest,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Ping,
    ProtocolViolation,
    SendEvent,
    SendToGroup,
    SequenceAck,
    StreamMessage,
    StreamStart,
    encode_invoke_error,
    encode_invoke_response,
    encode_stream_closed,
)
from .protocol.names import event_error, group_error, is_valid_event, is_valid_group
from .protocol.payload import DataType, Payload
from .streams import GroupStreams
from .trace import Trace

__all__ = ["ClientSession", "ConnectionSettings", "SESSION_SLOTS", "SessionHub", "SessionNode", "ClientFrame",
           "OPCODE_CONTINUATION", "OPCODE_TEXT", "OPCODE_BINARY", "MAX_EVENTS_IN_FLIGHT", "ACK_REPEAT_SECONDS",
           "SOCKET_HIGH_WATER_BYTES"]

log = logging.getLogger("fastpush.ws")
R = TypeVar("R")

# RFC 6455 opcodes of data frames (picows' WSMsgType values).
OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY = 0x0, 0x1, 0x2
ACK_REPEAT_SECONDS = 0.005
MAX_EVENTS_IN_FLIGHT = 64  # user events of one connection waiting for the upstream, before reading pauses
# Bytes a client's socket buffer may hold before frames wait in the connection's own queue, where a
# slow client's backlog can be dropped ahead of its close frame and expired messages left out.
SOCKET_HIGH_WATER_BYTES = 64 * 1024


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
    max_streams_per_connection: int = 64  # group streams a client may have open at once
    max_stream_bytes: int = 64 * 1024 * 1024  # data one group stream may carry
    trace: Trace = field(default_factory=Trace)  # the server's Live Trace (told only while watched)

    @property
    def socket_high_water_bytes(self) -> int:
        """What a client's socket buffer may hold before frames wait in fastpush's own queue, and
        what a recovery's resend writes before it waits for the socket to drain: bytes handed to
        the socket cannot be taken back (a message that expires meanwhile is sent all the same)."""
        return min(SOCKET_HIGH_WATER_BYTES, self.max_outbound_bytes)


class ClientFrame(Protocol):
    """A data frame as the session reads it (picows' WSFrame; its opcode is passed beside it)."""

    @property
    def fin(self) -> bool: ...
    @property
    def rsv1(self) -> bool: ...
    @property
    def rsv2(self) -> bool: ...
    @property
    def rsv3(self) -> bool: ...
    @property
    def payload_size(self) -> int: ...
    def get_payload_as_bytes(self) -> bytes: ...


class SessionHub(Protocol):
    """What a session asks of its hub (fastpush.hub.Hub); `conn` is the session's connection."""

    name: str
    events: HubEvents | None
    slow_client_closes: int

    def add_connection(self, conn: Any, groups: Iterable[str] = ...) -> None: ...
    def remove_connection(self, conn: Any) -> bool: ...
    def join(self, conn: Any, group: str) -> Awaitable[object] | None: ...
    def leave(self, conn: Any, group: str) -> None: ...
    def serve_last_values(self, conn: Any) -> None: ...


class SessionNode(Protocol):
    """What a session asks of its node (fastpush.node.Node): operations for the whole cluster."""

    def submit(self, op: ops.Operation[R]) -> Outcome[R]: ...


# The session's state, stored in the slots of the class that mixes ClientSession in.
SESSION_SLOTS = ("_node", "_hub", "_settings", "_codec", "_token_groups", "_raw_group", "_raw_no_echo",
                 "_fragments", "_fragment_type", "_fragment_bytes", "reconnection_token", "previous_token",
                 "_expiry", "_ack_ids", "_event_ctx", "_event_tail", "_events_in_flight", "_adopted",
                 "_repeat_acks", "address", "close_code", "messages_in", "bytes_in", "_connected_at",
                 "_invocations", "_moving", "_streams")


class ClientSession:
    """The protocol logic of one client connection; see the module's docstring."""

    if not TYPE_CHECKING:  # hidden from mypy, which would check the host's attributes against it
        __slots__ = ()  # the storage is the host's: the compiled Connection's fields and SESSION_SLOTS

    if TYPE_CHECKING:
        # The compiled Connection's fields and methods (fastpush/_fanout.pyi) the session uses.
        connection_id: str
        user_id: str | None
        hub: str
        subprotocol: str | None
        variant: int
        groups: set[str] | frozenset[str]
        roles: set[str] | frozenset[str]
        sequence_id: int
        acked_sequence_id: int
        replay: Any
        replay_bytes: int
        replay_overflowed: bool
        replay_max_messages: int
        replay_max_bytes: int
        resend_next: int
        unsent_from: int
        keep_session: bool
        close_reason: str | None

        @property
        def is_open(self) -> bool: ...
        def send_frame(self, opcode: int, payload: bytes) -> bool: ...
        def flush(self) -> None: ...
        def discard_pending(self) -> None: ...
        def acknowledge(self, sequence_id: int) -> None: ...
        def resend_unacknowledged(self, max_queued: int) -> bool: ...
        def mark_unsent(self) -> None: ...

        # The socket side (fastpush.client_connection.ClientConnection).
        @property
        def is_lost(self) -> bool:
            """No socket: none yet, or it disconnected."""
        def deliver(self, payload: Payload) -> None:
            """A server message to this client alone, through the fan-out path (numbered and kept
            for a reliable client)."""
        def send_close(self, code: int, reason: str) -> None:
            """What is queued, then a close frame (the socket is open); the socket is dropped if
            the client does not answer it in time."""
        def drop_socket(self) -> None:
            """Disconnect without a close frame."""
        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...

        # SESSION_SLOTS
        _node: SessionNode
        _hub: SessionHub
        _settings: ConnectionSettings
        _codec: Codec | None
        _token_groups: tuple[str, ...]
        _raw_group: str | None
        _raw_no_echo: bool
        _fragments: list[bytes] | None
        _fragment_type: int
        _fragment_bytes: int
        reconnection_token: str | None
        previous_token: str | None
        _expiry: asyncio.TimerHandle | None
        _ack_ids: dict[int, None] | None
        _event_ctx: EventContext | None
        _event_tail: asyncio.Task[None] | None
        _events_in_flight: int
        _adopted: bool
        _moving: bool
        _repeat_acks: bool
        address: str
        close_code: int | None
        messages_in: int
        bytes_in: int
        _connected_at: float
        _invocations: Invocations | None
        _streams: GroupStreams | None

    def _init_session(self, node: SessionNode, hub: SessionHub, accept: Accept, settings: ConnectionSettings,
                      event_ctx: EventContext | None) -> None:
        """Called once the compiled Connection is initialised."""
        self._node = node
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
        self._fragments = None
        self._fragment_type = OPCODE_TEXT
        self._fragment_bytes = 0
        self.reconnection_token = None
        self.previous_token = None
        self._expiry = None
        self._ack_ids = None  # made on the first ackId
        self._event_ctx = event_ctx  # made on first use when the connect event did not make it
        self._event_tail = None  # the last user event in flight, to keep their order
        self._events_in_flight = 0
        self._adopted = False  # a session that moved here from another node, resumed by `opened`
        self._moving = False  # its groups are moving between nodes with it, right now (presence_context)
        self._repeat_acks = accept.repeat_acks
        self.keep_session = reliable.is_reliable(accept.variant)
        self.address = accept.address
        self.close_code = None  # the close code of close_reason; None: no close frame
        self.messages_in = 0  # whole data messages from the client, and their bytes, for the disconnect line
        self.bytes_in = 0
        self._connected_at = 0.0
        self._invocations = None  # made on the first invocation
        self._streams = None  # made on the first stream start

    @property
    def groups_to_join(self) -> tuple[str, ...]:
        """The groups it joins when its socket arrives (token, connect handler, or a moved session)."""
        return tuple(self._token_groups)

    @property
    def connected_seconds(self) -> float:
        """How long ago the session began (0 until its socket arrived): the dashboard's age column."""
        return time.monotonic() - self._connected_at if self._connected_at else 0.0

    # --- the session's life -----------------------------------------------------------------------
    def opened(self, resumed: bool) -> None:
        """The client's socket is here: the first time, or again (`resumed`: back after a drop on this
        node), or for a session that moved here from another node (see `arrived`). A recovering
        client gets `connected` with a new token, then every unacknowledged message."""
        recovering = resumed or self._adopted
        if recovering:
            self.close_reason = self.close_code = None  # the session goes on
            self._cancel_expiry()
            self._adopted = False
        else:
            if self._hub.events is not None:
                self._hub.events.connected(self._context())  # before the joins' presence events
            self._hub.add_connection(self, self._token_groups)
            self._token_groups = ()
            self._connected_at = time.monotonic()
        self._log_connected(recovering)
        codec = self._codec
        if codec is not None:
            if reliable.is_reliable(self.variant):
                reliable.rotate_token(self)
            self.discard_pending()  # a new socket must not get bytes meant for the old one: they are resent
            self.send_frame(codec.opcode, codec.encode_connected(self.connection_id, self.user_id,
                                                                 self.reconnection_token))
        if recovering:
            reliable.resend(self, self._settings.socket_high_water_bytes)
        else:
            self._hub.serve_last_values(self)  # the groups it joined on connecting: after `connected`

    def arrived(self) -> None:
        """This session moved here from another node, at this instant (fastpush.broker.redis.handover):
        it joins its hub, buffers what is sent to it from now on, and waits for its client's socket
        as a dropped session does; `opened` resumes it, without a `connected` event."""
        self._moving = True  # it joins its groups here again, but joins none of them anew
        try:
            self._hub.add_connection(self, self._token_groups)
        finally:
            self._moving = False
        self._token_groups = ()
        self._connected_at = time.monotonic()
        self._adopted = True
        self.lost()

    def lost(self) -> None:
        """The socket is gone. A reliable session waits for its client for the recovery window; its
        invocations end now (the SDKs give them up when their socket drops)."""
        if self._invocations is not None:
            self._invocations.cancel_all()
        if self.close_reason is None:
            self.close_reason = "The connection was lost." if self.keep_session else "The connection closed."
        if self.keep_session:
            self.mark_unsent()  # what is numbered from now on waits for the next socket
            window = self._settings.recovery_window_seconds
            self._expiry = asyncio.get_running_loop().call_later(window, self.end_session)
        else:
            self.end_session()

    def end_session(self) -> None:
        self._cancel_expiry()
        self.keep_session = False
        self._cancel_streams()
        if not self._hub.remove_connection(self):
            return
        if self._hub.events is not None:
            self._hub.events.disconnected(self._context(), self.close_reason or "The connection closed.")
        self._log_disconnected()

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def presence_context(self) -> EventContext | None:
        """The context of this connection's group presence events; None while the session moves
        between nodes: its groups move with it, so it neither joins nor leaves them."""
        return None if self._moving else self._context()

    def recovery_refusal(self, token: str | None, subprotocol: str | None) -> str | None:
        """Why this session cannot be resumed with `token`, or None if it can (fastpush.reliable.refusal)."""
        return reliable.refusal(self, token, subprotocol)

    def describe(self, token: str | None, subprotocol: str | None) -> bytes | None:
        """What another node needs to take this reliable session over (its client recovered there),
        without its buffered messages; None if `token` and `subprotocol` may not resume it. The
        session stays here until `give_up`."""
        if self.recovery_refusal(token, subprotocol) is not None:
            return None
        return reliable.export_state(self, self._connection_state(), with_replay=False)

    def give_up(self) -> bytes:
        """The session moves to another node at this instant: its whole state, and it ends here
        without a `disconnected` event, as it lives on (a socket still here is dropped: its client
        recovers again, onto the session's new node)."""
        state = reliable.export_state(self, self._connection_state())
        self._cancel_streams()  # a stream's state stays with the node it was opened on
        self._cancel_expiry()
        self.keep_session = False
        self._moving = True  # it leaves its groups here, but leaves none of them
        self._hub.remove_connection(self)
        self.drop_socket()
        return state

    # --- closes -----------------------------------------------------------------------------------
    def close(self, code: int, reason: str, notify: bool = False, *, keep_session: bool = False) -> None:
        """Close with a close frame: JSON and protobuf clients first get `system/disconnected`
        when `notify` (REST closes). The session ends with the socket unless `keep_session`
        (a slow reliable client recovers)."""
        self.keep_session = keep_session and self.keep_session
        if self.close_reason is None:
            self.close_reason = reason
            self.close_code = int(code)
        if not self.is_open:
            if not self.keep_session and self.is_lost:
                self.end_session()
            return
        codec = self._codec
        if notify and codec is not None:
            self.send_frame(codec.opcode, codec.encode_disconnected(reason))
        self.send_close(code, reason)

    def closed_by_client(self, code: int) -> None:
        """The client sent its own close frame (not its answer to ours): the session ends with it."""
        self.keep_session = False
        if self.close_reason is None:
            self.close_code = code
            self.close_reason = f"The client closed the connection ({code})."

    def on_replay_overflow(self) -> None:
        fields = self._fields("replay_overflow")
        fields.update(messages=len(self.replay), bytes=self.replay_bytes)
        log.warning("connection %(connection_id)s: reliable buffer full (%(messages)d messages, %(bytes)d bytes); "
                    "closing (hub %(hub)s, user %(user)s, from %(address)s)", fields, extra=fields)
        self.close(CloseCode.POLICY_VIOLATION, "The reliable message buffer is full.")
        if self.is_lost:
            self.end_session()

    def on_outbound_overflow(self) -> None:
        """More than max_outbound_bytes wait for a client that does not read: it is too slow. What
        waited is dropped already, so the close frame is next after what its socket holds; a
        reliable client recovers the dropped messages from its replay buffer."""
        if self.close_reason is not None or not self.is_open:
            return
        fields = self._fields("slow_client")
        fields["max_outbound_bytes"] = self._settings.max_outbound_bytes
        log.warning("connection %(connection_id)s: more than %(max_outbound_bytes)d bytes queued; closing a slow "
                    "client (hub %(hub)s, user %(user)s, from %(address)s)", fields, extra=fields)
        self._hub.slow_client_closes += 1
        self.close(CloseCode.SLOW_CLIENT, "The client is too slow to receive its messages.", keep_session=True)

    # --- frames in --------------------------------------------------------------------------------
    def receive(self, opcode: int, frame: ClientFrame) -> None:
        """A data frame (text, binary or continuation) from a client whose close frame has not been
        read, before the server sent its own: the session acts on each whole message."""
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self.close(CloseCode.PROTOCOL_ERROR, "A reserved bit is set, but no extension was negotiated.")
            return
        msg_type = self._fragment_type if opcode == OPCODE_CONTINUATION else opcode
        data = self._assemble(opcode, frame)
        if data is None:
            return
        self.messages_in += 1
        self.bytes_in += len(data)
        codec = self._codec
        if codec is None:
            if msg_type == OPCODE_TEXT and not _is_utf8(data):
                self.close(CloseCode.INVALID_PAYLOAD, "A text message that is not valid UTF-8.")
                return
            self._on_raw(msg_type, data)
        elif msg_type != codec.opcode:
            kind = "Binary" if msg_type == OPCODE_BINARY else "Text"
            self.close(CloseCode.UNSUPPORTED_DATA,
                       f"{kind} frames are not supported by the {self.subprotocol} subprotocol.")
        else:
            self._on_request(codec, data)

    def _assemble(self, opcode: int, frame: ClientFrame) -> bytes | None:
        """Return a whole message, joining fragmented frames; None while a message is incomplete
        or when the connection was closed for breaking the rules (RFC 6455 §5.4, the size limit)."""
        limit = self._settings.max_message_bytes
        if opcode == OPCODE_CONTINUATION:
            fragments = self._fragments
            if fragments is None:
                self.close(CloseCode.PROTOCOL_ERROR, "A continuation frame without a first fragment.")
                return None
            self._fragment_bytes += frame.payload_size
            if self._fragment_bytes > limit:
                self._fragments = None
                self.close(CloseCode.MESSAGE_TOO_BIG, f"The message is larger than {limit} bytes.")
                return None
            fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return None
            self._fragments = None
            return b"".join(fragments)
        if self._fragments is not None:
            self._fragments = None
            self.close(CloseCode.PROTOCOL_ERROR, "A new message began before the fragmented one ended.")
            return None
        if frame.payload_size > limit:
            self.close(CloseCode.MESSAGE_TOO_BIG, f"The message is larger than {limit} bytes.")
            return None
        if not frame.fin:
            self._fragments = [frame.get_payload_as_bytes()]
            self._fragment_type = opcode
            self._fragment_bytes = frame.payload_size
            return None
        return frame.get_payload_as_bytes()

    # --- raw clients ------------------------------------------------------------------------------
    def _on_raw(self, msg_type: int, data: bytes) -> None:
        COUNTERS.raw_message()
        payload = Payload(DataType.BINARY if msg_type == OPCODE_BINARY else DataType.TEXT, data)
        group = self._raw_group
        if self._settings.trace.active:
            self._trace_message("raw", group or "message", data)
        if group is None:
            events = self._hub.events
            if events is not None and events.handles_user_event("message"):
                self._queue_event(events, "message", payload, None)
            else:
                self.close(CloseCode.INTERNAL_ERROR, "No event handler is configured for event 'message'.")
        elif not grants(self.roles, Permission.SEND_TO_GROUP, group):
            self.close(CloseCode.POLICY_VIOLATION, f"No permission to send to group '{group}'.")
        else:
            excluded = (self.connection_id,) if self._raw_no_echo else ()
            self._settle(self._node.submit(ops.SendToGroup(self.hub, group, payload, excluded, None, self.user_id)),
                         None)

    # --- subprotocols (JSON and protobuf) -----------------------------------------------------------
    def _on_request(self, codec: Codec, data: bytes) -> None:
        try:
            request = codec.parse(data)
        except ProtocolViolation as exc:
            COUNTERS.client_message(None)
            self.close(exc.code, exc.reason)
            if self._settings.trace.active:
                self._trace_message("invalid", None, data, exc.reason)
            return
        except InvalidRequest as exc:
            COUNTERS.client_message(None)
            self._ack(exc.ack_id, exc.name, exc.message)
            if self._settings.trace.active:
                self._trace_message("invalid", None, data, exc.message)
            return
        except InvalidInvocation as exc:
            COUNTERS.client_message(None)
            self._answer_invocation(encode_invoke_error(exc.invocation_id, "BadRequest", exc.message))
            if self._settings.trace.active:
                self._trace_message("invalid", None, data, exc.message)
            return
        COUNTERS.client_message(request)
        if self._settings.trace.active:
            self._trace_message(_MESSAGE_TYPES.get(type(request), "other"), getattr(request, "group", None) or
                                getattr(request, "event", None), data)
        if isinstance(request, SequenceAck):
            self.acknowledge(request.sequence_id)
            return
        ack_id = getattr(request, "ack_id", None)
        if ack_id is not None and self._seen(ack_id):
            self._ack(ack_id, "Duplicate", f"Message with ack-id: {ack_id} has been processed.")
            return
        match request:
            case SendToGroup():
                self._send_to_group(request)
            case JoinGroup() | LeaveGroup():
                self._join_or_leave(request)
            case Ping():
                self.send_frame(codec.opcode, codec.encode_pong())
            case SendEvent():
                events = self._hub.events
                if not is_valid_event(request.event):
                    self._ack(ack_id, "BadRequest", event_error(request.event))
                elif events is not None and events.handles_user_event(request.event):
                    self._queue_event(events, request.event, request.payload, ack_id)
                else:  # no handler wants it: accepted and dropped, as the service does
                    self._ack(ack_id)
            case Invoke():
                self._invoke(request)
            case CancelInvocation():
                if self._invocations is not None:
                    self._invocations.cancel(request.invocation_id)  # nothing is sent: the client gave up
            case StreamStart():
                self._start_stream(request)
            case StreamMessage():
                self._group_streams().receive(request)
            case GroupState():
                # Fire-and-forget without an ackId: the client asked for no answer (spec §3.1).
                self._ack(ack_id, "BadRequest", "Group state is not supported by this server.")
            case Ignored():
                pass
            case _:
                assert_never(request)

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
        elif not grants(self.roles, Permission.SEND_TO_GROUP, group):
            self._ack(request.ack_id, "Forbidden", f"The client does not have permission to send to group '{group}'.")
        else:
            excluded = (self.connection_id,) if request.no_echo else ()
            op = ops.SendToGroup(self.hub, group, request.payload, excluded, None, self.user_id,
                                 expires_at(request.ttl_seconds))
            self._settle(self._node.submit(op), request.ack_id)

    def _start_stream(self, request: StreamStart) -> None:
        """A group stream opens where a sendToGroup would be allowed; refused, the start is answered
        with the stream's terminal close (which the SDKs raise from their open-stream call). An
        ackId, which a start should not carry, gets an ack too."""
        group = request.group
        if not is_valid_group(group):
            refusal: tuple[str, str] | None = ("BadRequest", group_error(group))
        elif not grants(self.roles, Permission.SEND_TO_GROUP, group):
            refusal = ("Forbidden", f"The client does not have permission to send to group '{group}'.")
        else:
            refusal = None
        if refusal is not None:
            self.send_frame(OPCODE_TEXT, encode_stream_closed(request.stream_id, *refusal))
            self._ack(request.ack_id, *refusal)
            return
        self._group_streams().start(request)
        self._ack(request.ack_id)

    def _group_streams(self) -> GroupStreams:
        streams = self._streams
        if streams is None:
            settings = self._settings
            streams = self._streams = GroupStreams(
                self.hub, self.connection_id, self.user_id, self._stream_reply, self._node.submit,
                settings.max_streams_per_connection, settings.max_stream_bytes)
        return streams

    def _stream_reply(self, frame: bytes) -> None:
        """Streams exist only in the JSON family: their answers are text frames."""
        if self.is_open:
            self.send_frame(OPCODE_TEXT, frame)

    def _cancel_streams(self) -> None:
        if self._streams is not None:
            self._streams.cancel_all(self.close_reason or "The publisher's connection closed.")

    def _join_or_leave(self, request: JoinGroup | LeaveGroup) -> None:
        group = request.group
        verb = "join" if type(request) is JoinGroup else "leave"
        limit = self._settings.max_groups_per_connection
        if not is_valid_group(group):
            self._ack(request.ack_id, "BadRequest", group_error(group))
        elif not grants(self.roles, Permission.JOIN_LEAVE_GROUP, group):
            self._ack(request.ack_id, "Forbidden", f"The client does not have permission to {verb} group '{group}'.")
        elif verb == "join" and group not in self.groups and len(self.groups) >= limit:
            self._ack(request.ack_id, "BadRequest", f"The connection is already in {limit} groups, the most allowed.")
        else:
            if verb == "join":
                self._settle(self._hub.join(self, group), request.ack_id)
            else:
                self._hub.leave(self, group)
                self._ack(request.ack_id)

    # --- user events ------------------------------------------------------------------------------
    def _queue_event(self, events: HubEvents, name: str, payload: Payload, ack_id: int | None) -> None:
        """Events of one connection reach the handler one at a time, in order; a slow handler
        delays only this connection's events, never anybody's pushes. Past MAX_EVENTS_IN_FLIGHT
        waiting events the socket is not read until they drain (TCP pushes back on the client)."""
        previous = self._event_tail
        self._event_tail = task = asyncio.get_running_loop().create_task(
            self._run_event(events, previous, name, payload, ack_id))
        events.track(task)
        self._events_in_flight += 1
        if self._events_in_flight == MAX_EVENTS_IN_FLIGHT:
            self.pause_reading()
        task.add_done_callback(self._event_done)

    def _event_done(self, _task: asyncio.Task[None]) -> None:
        self._events_in_flight -= 1
        if self._events_in_flight == MAX_EVENTS_IN_FLIGHT // 2:
            self.resume_reading()

    async def _run_event(self, events: HubEvents, previous: asyncio.Task[None] | None, name: str, payload: Payload,
                         ack_id: int | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))
        try:
            reply = await events.user_event(self._context(), name, payload)
        except EventFailed:  # logged where it failed (the upstream, the dispatcher)
            if self._codec is None:
                self.close(CloseCode.INTERNAL_ERROR, f"The event handler for '{name}' failed.")
            else:
                self._ack(ack_id, "InternalServerError", f"The event handler for '{name}' failed.")
            return
        if reply is not None and reply.state is not None:
            self._context().state = reply.state
        if reply is not None and reply.payload is not None and self.is_open:
            if self._codec is None:
                self.send_frame(OPCODE_BINARY if reply.payload.is_binary else OPCODE_TEXT, reply.payload.data)
            else:
                self.deliver(reply.payload)
        self._ack(ack_id)

    def _connection_state(self) -> str | None:
        """What the upstream set with ce-connectionState."""
        return self._event_ctx.state if self._event_ctx is not None else None

    # --- invocations ------------------------------------------------------------------------------
    def _invoke(self, request: Invoke) -> None:
        """An invocation goes to the handler of the user event of its name and runs beside the
        connection's events and other invocations (each answer names its id). Past
        MAX_INVOCATIONS_IN_FLIGHT, or with an id already in flight, it is refused."""
        invocation_id, name = request.invocation_id, request.event
        events = self._hub.events
        if not is_valid_event(name):
            self._answer_invocation(encode_invoke_error(invocation_id, "BadRequest", event_error(name)))
        elif events is None or not events.handles_user_event(name):
            self._answer_invocation(encode_invoke_error(invocation_id, "NotFound",
                                                        f"No event handler is configured for event '{name}'."))
        else:
            invocations = self._invocations
            if invocations is None:
                invocations = self._invocations = Invocations()
            refusal = invocations.refusal(invocation_id)
            if refusal is not None:
                self._answer_invocation(encode_invoke_error(invocation_id, "BadRequest", refusal))
            else:
                events.track(invocations.start(invocation_id, self._run_invocation(events, request)))

    async def _run_invocation(self, events: HubEvents, request: Invoke) -> None:
        invocation_id, name = request.invocation_id, request.event
        try:
            reply = await events.invoke(self._context(), name, request.payload, invocation_id)
        except InvocationFailed as exc:
            self._answer_invocation(encode_invoke_error(invocation_id, exc.name, exc.message))
            return
        except EventFailed:  # logged where it failed (the upstream, the dispatcher)
            self._answer_invocation(encode_invoke_error(invocation_id, "InternalServerError",
                                                        f"The event handler for '{name}' failed."))
            return
        if reply is not None and reply.state is not None:
            self._context().state = reply.state
        self._answer_invocation(encode_invoke_response(invocation_id, reply.payload if reply is not None else None))

    def _answer_invocation(self, frame: bytes) -> None:
        """Invocations exist only in the JSON family: their answers are text frames."""
        if self.is_open:
            self.send_frame(OPCODE_TEXT, frame)

    def _context(self) -> EventContext:
        if self._event_ctx is None:
            self._event_ctx = EventContext(self._hub.name, self.connection_id, self.user_id, self.subprotocol)
        return self._event_ctx

    # --- acks -------------------------------------------------------------------------------------
    def _settle(self, outcome: Outcome[object], ack_id: int | None) -> None:
        """Ack now, or once a remote broker has taken the operation (an error ack if it cannot)."""
        def failed(exc: Exception) -> None:
            if not isinstance(exc, BrokerUnavailable):
                raise exc
            self._ack(ack_id, "InternalServerError", str(exc))
        finish(outcome, lambda _: self._ack(ack_id), failed)

    def _ack(self, ack_id: int | None, error_name: str | None = None, message: str = "") -> None:
        codec = self._codec
        if ack_id is None or codec is None or not self.is_open:
            return
        ack = codec.encode_ack(ack_id, error_name, message)
        self.send_frame(codec.opcode, ack)
        if self._repeat_acks:
            # azure-messaging-webpubsubclient 1.1 can miss an ack that arrives before its sending
            # thread waits for it, then blocks for its whole ack timeout (30 s). Sent once more a
            # moment later, the ack wakes it; the SDKs ignore an ackId they no longer wait for.
            asyncio.get_running_loop().call_later(ACK_REPEAT_SECONDS, self._repeat_ack, ack)

    def _repeat_ack(self, ack: bytes) -> None:
        if self.is_open and self._codec is not None:
            self.send_frame(self._codec.opcode, ack)

    # --- log lines --------------------------------------------------------------------------------
    def _fields(self, event: str) -> dict[str, object]:
        return {"event": event, "hub": self.hub, "connection_id": self.connection_id, "user": self.user_id,
                "subprotocol": self.subprotocol, "address": self.address}

    def _log_connected(self, recovering: bool) -> None:
        COUNTERS.connected(self.subprotocol, recovering)
        fields = self._fields("reconnected" if recovering else "connected")
        if self._settings.trace.active:
            self._settings.trace.tell("connection", fields)
        log.info("connection %(connection_id)s %(event)s: hub %(hub)s, user %(user)s, subprotocol "
                 "%(subprotocol)s, from %(address)s", fields, extra=fields)

    def _log_disconnected(self) -> None:
        """One line per ended session. Only what came in is counted: counting what goes out would
        add work to every delivery of the fan-out loop."""
        COUNTERS.disconnected(self.close_code)
        fields = self._fields("disconnected")
        fields.update(code=self.close_code if self.close_code is not None else int(CloseCode.ABNORMAL_CLOSURE),
                      reason=self.close_reason or "The connection closed.",
                      duration_s=round(time.monotonic() - self._connected_at, 3) if self._connected_at else 0.0,
                      messages_in=self.messages_in, bytes_in=self.bytes_in)
        log.info("connection %(connection_id)s disconnected: hub %(hub)s, user %(user)s, from %(address)s, "
                 "code %(code)s (%(reason)s) after %(duration_s).1f s, %(messages_in)d messages "
                 "(%(bytes_in)d bytes) in", fields, extra=fields)
        if self._settings.trace.active:
            self._settings.trace.tell("connection", fields)

    def _trace_message(self, kind: str, target: str | None, data: bytes, error: str | None = None) -> None:
        """A whole client message in the Live Trace: its type, its target (a group, an event), its size."""
        fields = self._fields(kind)
        fields.update(target=target, size=len(data), outcome="invalid" if error is not None else "received")
        if error is not None:
            fields["reason"] = error
        self._settings.trace.tell("message", fields, data)


# A client request's name in the Live Trace (its `type` on the wire).
_MESSAGE_TYPES: dict[type, str] = {
    SendToGroup: "sendToGroup", JoinGroup: "joinGroup", LeaveGroup: "leaveGroup", SendEvent: "event", Ping: "ping",
    SequenceAck: "sequenceAck", Invoke: "invoke", CancelInvocation: "cancelInvocation", StreamStart: "streamStart",
    StreamMessage: "stream", GroupState: "groupState"}


def _is_utf8(data: bytes) -> bool:
    """RFC 6455 §8.1: a text message must be valid UTF-8 (else close 1007)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
