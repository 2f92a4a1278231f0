"""The benchmark message: a fixed-width send timestamp and sequence number padded to the payload size.

Fixed width keeps every frame of one run the same length, so subscribers can count bytes instead of
parsing frames at saturation; the timestamp is CLOCK_MONOTONIC (system-wide on Linux), so any process
on the machine can compute receive - send.
"""
from __future__ import annotations

import time

__all__ = ["MARKER", "MIN_BYTES", "find", "make", "stamp"]

MARKER = b"@"
_HEAD = "@{:019d}#{:09d}"
MIN_BYTES = 30  # len(_HEAD.format(0, 0))


def make(seq: int, size: int) -> str:
    """A text payload of exactly `size` ASCII bytes, stamped now."""
    head = _HEAD.format(time.monotonic_ns(), seq)
    return head + "x" * (size - len(head))


def find(data: bytes, start: int, end: int) -> int:
    """Where the stamp starts inside data[start:end] (raw frame or JSON envelope), or -1."""
    at = data.find(MARKER, start, end)
    return at + 1 if at >= 0 and at + MIN_BYTES <= end else -1


def stamp(data: bytes, at: int) -> tuple[int, int]:
    """(send_ns, seq) from the stamp at `at`."""
    return int(data[at:at + 19]), int(data[at + 20:at + 29])
