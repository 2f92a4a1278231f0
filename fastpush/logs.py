"""Log output for `fastpush serve` (text or one JSON object per line) and a rate limit for the
lines an attacker can cause (refused handshakes, failing upstreams).

Events pass their fields both as the message's arguments (a mapping, so the text line reads
well) and as `extra=`, so the JSON line carries them as keys and nobody has to parse messages.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["LOG_FORMATS", "JsonFormatter", "RateLimitedLog", "configure_logging", "one_line"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LINES_PER_SECOND = 10  # a rate-limited source logs at most this many lines a second, plus one summary
SHOWN_CHARS = 300  # how much of a client-chosen text (a refusal's reason) a line echoes

# Attributes every LogRecord has: whatever else a record holds came in through `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_encode = msgspec.json.Encoder(enc_hook=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _encode(entry).decode()


def configure_logging(level: str, log_format: str) -> None:
    """Send every log line to stderr in `log_format` ("text" or "json"); stdout stays for the
    connection string."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def one_line(text: str) -> str:
    """A client-chosen text made safe for a log line: clipped, control characters escaped."""
    text = text[:SHOWN_CHARS]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class RateLimitedLog:
    """At most `per_second` lines a second from one source, whatever a client does; the lines
    left out are counted and reported in one summary line when that second ends. Used on the
    event loop's thread only (the summary is a loop timer)."""

    def __init__(self, logger: logging.Logger, what: str, per_second: int = LINES_PER_SECOND):
        self.logger = logger
        self.what = what
        self.per_second = per_second
        self._window_end = 0.0
        self._logged = 0
        self._suppressed = 0

    def log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        """`message` is formatted with `fields` (`%(name)s`), which also go to the record as extras."""
        now = time.monotonic()
        if now >= self._window_end and self._suppressed == 0:
            self._window_end = now + 1.0
            self._logged = 0
        if self._logged < self.per_second:
            self._logged += 1
            self.logger.log(level, message, fields, extra=fields)
            return
        if self._suppressed == 0:
            asyncio.get_running_loop().call_later(self._window_end - now, self._summarize, level)
        self._suppressed += 1

    def _summarize(self, level: int) -> None:
        fields = {"event": "suppressed", "suppressed": self._suppressed, "what": self.what}
        self.logger.log(level, "suppressed %(suppressed)d more %(what)s in the last second", fields, extra=fields)
        self._suppressed = 0
        self._window_end = time.monotonic() + 1.0
        self._logged = 0
