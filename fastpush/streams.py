"""One connection's group streams (client protocol spec §3.6, as @azure/web-pubsub-client 1.1.0's
`openGroupStream` uses them): a publisher opens a stream to a group, sends numbered fragments and
ends it; each fragment is published to the group at once, as an ordinary group message carrying
`stream` (one send, framed once per broadcast like every other), so the server buffers nothing:
a stream holds a few counters and one timer, whatever it carries.

- Start: answered with `streamAck` expecting 1, or `streamClosed` BadRequest (id already open,
  too many streams open).
- Fragment: the expected one is published, and acknowledged with one `streamAck` per stream per
  event-loop turn (the spec lets acks be batched); a lower id is a duplicate (a recovered client
  resends what was not acknowledged), not published again, and acknowledged; a higher id is
  `streamNack` InvalidSequenceId with the id expected. Past `max_stream_bytes` of data the stream
  is closed (BadRequest to the publisher, `Cancelled` to the group).
- Keepalive: keeps the stream alive, unanswered. End: the group gets the terminal message (its
  `streamSequenceId` the next expected, the publisher's error as `UserError`), the publisher
  `streamClosed` without error.
- Nothing on the stream for its idle timeout: `IdleTimeout` to both. The session ending (a socket
  gone without recovery, a session moved away): `Cancelled` to the group.
- Data, keepalive or end on a stream that is not open: `streamClosed` StreamNotFound.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import ops
from .broker.errors import BrokerUnavailable
from .outcome import Outcome, finish
from .protocol.json_protocol import (
    StreamError,
    StreamInfo,
    StreamMessage,
    StreamStart,
    encode_stream_ack,
    encode_stream_closed,
    encode_stream_nack,
)
from .protocol.payload import DataType, Payload

__all__ = ["GroupStreams", "DEFAULT_IDLE_TIMEOUT_MS"]

log = logging.getLogger("fastpush.ws")

DEFAULT_IDLE_TIMEOUT_MS = 300_000  # the service's default (client-spec §3.6.1)
_NO_DATA = Payload(DataType.TEXT, b"")  # a terminal message's: JSON receivers need a dataType to read it


class _Stream:
    __slots__ = ("ack_due", "bytes", "excluded", "expected", "group", "idle_s", "last_active", "stream_id", "timer")

    def __init__(self, stream_id: str, group: str, excluded: tuple[str, ...], idle_s: float) -> None:
        self.stream_id = stream_id
        self.group = group
        self.excluded = excluded  # the publisher itself, with noEcho
        self.idle_s = idle_s
        self.expected = 1  # the next streamSequenceId
        self.bytes = 0  # data published so far
        self.ack_due = False
        self.last_active = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None


class GroupStreams:
    """The open streams of one connection. `reply` writes a text frame to the publisher (if its
    socket is open), `submit` hands an operation to the node."""

    def __init__(self, hub: str, connection_id: str, user_id: str | None, reply: Callable[[bytes], None],
                 submit: Callable[[ops.SendToGroup], Outcome[None]], max_streams: int, max_bytes: int) -> None:
        self._hub = hub
        self._connection_id = connection_id
        self._user_id = user_id
        self._reply = reply
        self._submit = submit
        self._max_streams = max_streams
        self._max_bytes = max_bytes
        self._open: dict[str, _Stream] = {}

    def __len__(self) -> int:
        return len(self._open)

    def start(self, request: StreamStart) -> None:
        """A start whose group and permission the session checked."""
        stream_id = request.stream_id
        if stream_id in self._open:
            self._reply(encode_stream_closed(stream_id, "BadRequest", "The stream is already open."))
            return
        if len(self._open) >= self._max_streams:
            self._reply(encode_stream_closed(stream_id, "BadRequest", f"The connection already has "
                                             f"{self._max_streams} streams open, the most allowed."))
            return
        timeout_ms = request.idle_timeout_ms or DEFAULT_IDLE_TIMEOUT_MS
        excluded = (self._connection_id,) if request.no_echo else ()
        stream = self._open[stream_id] = _Stream(stream_id, request.group, excluded, timeout_ms / 1000)
        stream.timer = asyncio.get_running_loop().call_later(stream.idle_s, self._idle, stream)
        self._reply(encode_stream_ack(stream_id, 1))

    def receive(self, message: StreamMessage) -> None:
        """streamData (fragment or keepalive) or streamEnd."""
        stream = self._open.get(message.stream_id)
        if stream is None:
            # The id is named once, in streamId: the answer costs no more than what was sent.
            self._reply(encode_stream_closed(message.stream_id, "StreamNotFound", "The stream is not open."))
            return
        stream.last_active = time.monotonic()
        if message.kind == "streamend":
            self._end(stream, message.error)
            return
        seq, payload = message.sequence_id, message.payload
        if seq is None or payload is None:  # a keepalive
            return
        if seq > stream.expected:
            self._reply(encode_stream_nack(stream.stream_id, "InvalidSequenceId",
                                           f"Expected streamSequenceId {stream.expected}, got {seq}.", stream.expected))
            return
        if seq == stream.expected:
            stream.bytes += len(payload.data)
            if stream.bytes > self._max_bytes:
                message_text = f"The stream carried more than {self._max_bytes} bytes, the most allowed."
                self._close(stream, StreamError("Cancelled", message_text), ("BadRequest", message_text))
                return
            self._publish(stream, payload, StreamInfo(stream.stream_id, seq))
            stream.expected += 1
        # else a duplicate: already published; the ack tells the publisher where the stream is
        if not stream.ack_due:
            stream.ack_due = True
            asyncio.get_running_loop().call_soon(self._ack, stream)

    def cancel_all(self, reason: str) -> None:
        """The session ends: every open stream ends for its group with `Cancelled`."""
        for stream in tuple(self._open.values()):
            self._close(stream, StreamError("Cancelled", reason), None)

    # --- inside ------------------------------------------------------------------------------------
    def _ack(self, stream: _Stream) -> None:
        stream.ack_due = False
        if self._open.get(stream.stream_id) is stream:
            self._reply(encode_stream_ack(stream.stream_id, stream.expected))

    def _end(self, stream: _Stream, error: StreamError | None) -> None:
        self._forget(stream)
        self._publish(stream, _NO_DATA, StreamInfo(stream.stream_id, stream.expected, True, error))
        self._reply(encode_stream_closed(stream.stream_id))

    def _idle(self, stream: _Stream) -> None:
        """The timer is set once and pushed on only when it fires early: activity costs no timer."""
        if self._open.get(stream.stream_id) is not stream:
            return
        left = stream.last_active + stream.idle_s - time.monotonic()
        if left > 0:
            stream.timer = asyncio.get_running_loop().call_later(left, self._idle, stream)
            return
        text = f"No stream activity for {stream.idle_s:g} s, the stream's idle timeout."
        self._close(stream, StreamError("IdleTimeout", text), ("IdleTimeout", text))

    def _close(self, stream: _Stream, error: StreamError, answer: tuple[str, str] | None) -> None:
        """End `stream` for the service's reason: the group's terminal message, then the publisher's
        streamClosed (`answer`: its error name and message; None: the publisher is gone)."""
        self._forget(stream)
        self._publish(stream, _NO_DATA, StreamInfo(stream.stream_id, stream.expected, True, error))
        if answer is not None:
            self._reply(encode_stream_closed(stream.stream_id, *answer))

    def _forget(self, stream: _Stream) -> None:
        del self._open[stream.stream_id]
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None

    def _publish(self, stream: _Stream, payload: Payload, info: StreamInfo) -> None:
        op = ops.SendToGroup(self._hub, stream.group, payload, excluded=stream.excluded, from_user_id=self._user_id,
                             stream=info)

        def failed(exc: Exception) -> None:
            if not isinstance(exc, BrokerUnavailable):
                raise exc
            log.warning("stream %s of connection %s: %s", stream.stream_id, self._connection_id, exc)
            if self._open.get(stream.stream_id) is stream:
                self._forget(stream)
                self._reply(encode_stream_closed(stream.stream_id, "InternalServerError", str(exc)))
        finish(self._submit(op), _ignore, failed)


def _ignore(_value: object) -> None:
    pass
