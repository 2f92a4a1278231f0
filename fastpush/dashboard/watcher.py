"""One browser watching the Live Trace over a WebSocket: what it asked to see, and what it missed.

The page sends its settings as one small JSON text message whenever they change:
`{"paused": bool, "payloads": bool, "kinds": ["connection", "message", "rest", "upstream"],
"hub": "name" or null}`. The server sends `{"type": "trace", "lines": [...], "dropped": N}`
batches (one per event-loop turn with something to tell).

A browser that reads slowly never makes the server hold more for it: once its socket holds more
than WATCHER_BUFFER_BYTES, lines are counted instead of sent, and the next batch it gets says
how many it lost (`dropped`), which the page shows as a marker.
"""
from __future__ import annotations

import asyncio
from typing import Final

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ..fanout import frame
from ..trace import Record, Trace

__all__ = ["KINDS", "MAX_SETTINGS_BYTES", "TraceWatcher", "WATCHER_BUFFER_BYTES"]

KINDS: Final = ("connection", "message", "rest", "upstream")
WATCHER_BUFFER_BYTES: Final = 256 * 1024  # what a watcher's socket may hold before its lines are dropped
MAX_SETTINGS_BYTES: Final = 4096  # one settings message from the page
CLOSE_TIMEOUT_SECONDS: Final = 2.0
OPCODE_TEXT: Final = 0x1  # RFC 6455

_encode = msgspec.json.Encoder().encode


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    paused: bool = False
    payloads: bool = False
    kinds: list[str] = msgspec.field(default_factory=lambda: list(KINDS))
    hub: str | None = None


_decode_settings = msgspec.json.Decoder(Settings).decode


class TraceWatcher(WSListener):
    """Registered with the trace, and in `open_watchers`, while its socket is open; `session` is
    the login it came with (the dashboard closes the watcher when that session ends). One past
    `max_open` is closed with 1013 as soon as it opens (the upgrade checks first; this catches
    upgrades that raced)."""

    def __init__(self, trace: Trace, session: str, open_watchers: set[TraceWatcher], max_open: int) -> None:
        self.trace = trace
        self.session = session
        self._open_watchers = open_watchers
        self._max_open = max_open
        self.transport: WSTransport | None = None
        self.settings = Settings()
        self.dropped = 0  # lines lost since the last batch this watcher got
        self._blocked = False  # its socket holds more than WATCHER_BUFFER_BYTES

    # --- what the trace reads -----------------------------------------------------------------
    @property
    def receiving(self) -> bool:
        return self.transport is not None and not self.settings.paused

    @property
    def wants_payloads(self) -> bool:
        return self.settings.payloads

    def receive(self, records: list[Record], dropped: int) -> None:
        settings = self.settings
        hub = settings.hub.lower() if settings.hub else None
        kinds = settings.kinds
        lines = [r for r in records if r["kind"] in kinds and (hub is None or str(r.get("hub", "")).lower() == hub)]
        self.dropped += dropped
        transport = self.transport
        if transport is None or transport.is_close_frame_sent or transport.is_disconnected:
            return
        if self._blocked:
            self.dropped += len(lines)
            return
        if not lines and not self.dropped:
            return
        if not settings.payloads:
            lines = [{k: v for k, v in r.items() if k != "payload"} if "payload" in r else r for r in lines]
        # Framed here and written as one bytes object: picows 2.3.1's send() of more than 8 KiB hands
        # the transport a view of a header buffer it reuses, which a backed-up socket would send
        # overwritten by a later frame's header.
        data = _encode({"type": "trace", "lines": lines, "dropped": self.dropped})
        transport.underlying_transport.write(frame(OPCODE_TEXT, data))
        self.dropped = 0

    # --- picows callbacks ---------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        if len(self._open_watchers) >= self._max_open:
            transport.send_close(WSCloseCode.TRY_AGAIN_LATER, b"Too many Live Trace watchers are open.")
            transport.disconnect()
            return
        self.transport = transport
        transport.underlying_transport.set_write_buffer_limits(high=WATCHER_BUFFER_BYTES)
        self._open_watchers.add(self)
        self.trace.watch(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.transport is None:
            return
        self.transport = None
        self._open_watchers.discard(self)
        self.trace.unwatch(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        elif transport.is_close_frame_sent or kind in (WSMsgType.PING, WSMsgType.PONG):
            return
        elif kind != WSMsgType.TEXT or not frame.fin:
            self.close(WSCloseCode.UNSUPPORTED_DATA, "The trace takes one settings message per text frame.")
        elif frame.payload_size > MAX_SETTINGS_BYTES:
            self.close(WSCloseCode.MESSAGE_TOO_BIG, f"Settings are at most {MAX_SETTINGS_BYTES} bytes.")
        else:
            self._configure(frame.get_payload_as_bytes())

    def pause_writing(self) -> None:
        self._blocked = True

    def resume_writing(self) -> None:
        """Its socket drained: say at once how many lines it lost (the page shows the marker)."""
        self._blocked = False
        if self.dropped and self.transport is not None:
            self.receive([], 0)

    # --- its own --------------------------------------------------------------------------------
    def close(self, code: WSCloseCode, reason: str) -> None:
        transport = self.transport
        if transport is None or transport.is_close_frame_sent:
            return
        transport.send_close(code, reason.encode()[:123])
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, transport.disconnect)

    def _configure(self, data: bytes) -> None:
        try:
            settings = _decode_settings(data)
        except msgspec.DecodeError as exc:
            self.close(WSCloseCode.INVALID_TEXT, f"Bad trace settings: {exc}")
            return
        unknown = [k for k in settings.kinds if k not in KINDS]
        if unknown:
            self.close(WSCloseCode.INVALID_TEXT, f"Unknown trace kind {unknown[0][:40]!r}.")
            return
        self.settings = settings
        self.trace.update()
