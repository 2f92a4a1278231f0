"""Live Trace's source: what happens on this server (connections, client messages, REST calls,
upstream calls), told to the dashboard's watchers as it happens.

Nothing is recorded while nobody watches: every place that could tell something first reads
`Trace.active`, one attribute, and does nothing more when it is false. The fan-out loop never
tells anything (its per-recipient work stays as it is); what it did shows in the REST call or
client message that caused it.

Records are gathered during one turn of the event loop and handed to the watchers together at
its end, at most MAX_RECORDS_PER_TURN of them (the rest are counted as dropped), so a burst costs
one batch per watcher, not one frame per event. Each text a record carries is clipped to
MAX_TEXT_CHARS, and a payload to MAX_PAYLOAD_BYTES, so one record stays small whatever a client
sent. This module imports nothing of fastpush: any layer may tell the trace.
"""
from __future__ import annotations

import asyncio
import base64
import time
from typing import Final, Protocol

__all__ = ["MAX_PAYLOAD_BYTES", "MAX_RECORDS_PER_TURN", "MAX_TEXT_CHARS", "Record", "Trace", "Watcher"]

MAX_RECORDS_PER_TURN: Final = 1000  # records handed to the watchers at the end of one loop turn
MAX_TEXT_CHARS: Final = 300  # one text field of a record (a reason, a path, a name)
MAX_PAYLOAD_BYTES: Final = 1024  # the start of a payload, shown when a watcher asks for payloads

Record = dict[str, object]


class Watcher(Protocol):
    """A trace's reader (fastpush.dashboard.watcher.TraceWatcher)."""

    @property
    def wants_payloads(self) -> bool: ...
    @property
    def receiving(self) -> bool:
        """False while it has paused the trace: it costs nothing then."""
    def receive(self, records: list[Record], dropped: int) -> None:
        """One turn's records (`dropped`: how many more the turn had, past the cap)."""


class Trace:
    """One server's trace. `active` and `payloads` are read by the code that tells it."""

    __slots__ = ("active", "payloads", "_watchers", "_records", "_dropped", "_flush_scheduled")

    def __init__(self) -> None:
        self.active = False  # a watcher is receiving: record what happens
        self.payloads = False  # a receiving watcher asked for payloads
        self._watchers: list[Watcher] = []
        self._records: list[Record] = []
        self._dropped = 0
        self._flush_scheduled = False

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def watch(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)
        self.update()

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)
        self.update()

    def update(self) -> None:
        """A watcher came, went, paused, resumed or changed its payload switch."""
        receiving = [w for w in self._watchers if w.receiving]
        self.active = bool(receiving)
        self.payloads = any(w.wants_payloads for w in receiving)

    def tell(self, kind: str, fields: Record, payload: bytes | None = None) -> None:
        """Record one happening (call only when `active`): its kind ("connection", "message",
        "rest", "upstream") and its fields ("event" first), plain values whose text is clipped
        here; `payload` is kept (its start) only while a watcher asks for payloads."""
        if len(self._records) >= MAX_RECORDS_PER_TURN:
            self._dropped += 1
            return
        record: Record = {"time": round(time.time() * 1000), "kind": kind}
        for name, value in fields.items():
            record[name] = _clip(value) if isinstance(value, str) else value
        if payload is not None and self.payloads:
            record["payload"] = _preview(payload)
        self._records.append(record)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        records, dropped = self._records, self._dropped
        self._records, self._dropped, self._flush_scheduled = [], 0, False
        for watcher in tuple(self._watchers):
            if watcher.receiving:
                watcher.receive(records, dropped)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


def _preview(payload: bytes) -> dict[str, object]:
    """The payload's start: as text when it is UTF-8 (a character cut at the end is left out),
    else base64; its full size beside it."""
    head = payload[:MAX_PAYLOAD_BYTES]
    for cut in range(4 if len(payload) > MAX_PAYLOAD_BYTES else 1):
        try:
            return {"text": head[:len(head) - cut].decode(), "bytes": len(payload)}
        except UnicodeDecodeError:
            continue
    return {"base64": base64.b64encode(head).decode(), "bytes": len(payload)}
