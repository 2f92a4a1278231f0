"""A progress bar on stderr: one redrawn line on a terminal, one line per phase otherwise (logs, CI)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

WIDTH = 28


class Progress:
    """`total` units of work (one per server and connection count); `phase` starts a new part of one."""

    def __init__(self, total: float, stream: TextIO = sys.stderr):
        self.total = max(total, 1e-9)
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.monotonic()
        self.done = 0.0
        self.label = ""

    def phase(self, done: float, label: str) -> None:
        self.done, self.label = done, label
        if self.live:
            self._draw("")
        else:
            self.stream.write(f"[{self._elapsed()}] {self._percent()} {label}\n")
            self.stream.flush()

    def detail(self, done: float, text: str) -> None:
        """Progress inside the current phase; drawn only on a terminal."""
        self.done = done
        if self.live:
            self._draw(text)

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self, text: str) -> None:
        filled = int(WIDTH * min(self.done / self.total, 1.0))
        bar = "#" * filled + "-" * (WIDTH - filled)
        self.stream.write(f"\r\033[K[{bar}] {self._percent()} {self._elapsed()} {self.label} {text}")
        self.stream.flush()

    def _percent(self) -> str:
        return f"{100 * min(self.done / self.total, 1.0):3.0f}%"

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:d}:{seconds % 60:02d}"
