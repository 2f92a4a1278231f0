"""The rule for a message's time to live: REST `messageTtlSeconds` and a client's `ttlSeconds`.

Both are whole seconds from 0 to 300; 0 (the default) means the message never expires. What
expiring means, and the clocks it is measured with, is fastpush.expiry's job.
"""
from __future__ import annotations

__all__ = ["MAX_TTL_SECONDS", "TtlError", "parse_ttl", "check_ttl"]

MAX_TTL_SECONDS = 300


class TtlError(ValueError):
    pass


def parse_ttl(text: str, name: str = "messageTtlSeconds") -> int:
    """A TTL written in a query string: ASCII digits only (no sign, no spaces, no other scripts'
    digits, which str.isdigit() would let through to a failing int())."""
    if not 0 < len(text) <= 10 or not text.isascii() or not text.isdigit():
        raise TtlError(f"{name} must be an integer from 0 to {MAX_TTL_SECONDS}, not '{text[:40]}'.")
    return check_ttl(int(text), name)


def check_ttl(value: object, name: str = "ttlSeconds") -> int:
    """A TTL given as a value (a client message's field): an integer, booleans excluded, in range."""
    if type(value) is not int or not 0 <= value <= MAX_TTL_SECONDS:
        if type(value) is not int:
            shown: object = f"a {type(value).__name__}"
        else:
            shown = value if abs(value) < 10**12 else "a larger number"
        raise TtlError(f"{name} must be an integer from 0 to {MAX_TTL_SECONDS}, not {shown}.")
    return value
