"""Who may see the dashboard: one-time login tokens, session cookies, and a limit on failed tries.

An operator logs in with a URL carrying a login token (printed at start, or made by `fastpush
dashboard` with the access key): random, used once, expiring. Using it starts a session, whose
id travels in an HttpOnly, SameSite=Strict cookie. Only hashes of tokens and session ids are kept,
and both stores are bounded: the oldest entry makes room for a new one.

Every failed try (a bad, expired or used login token; a cookie naming no session) is counted per
client address and in all; past either limit within a minute, tries are refused (429) before
anything is checked, so guessing cannot go on faster than that.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Final

__all__ = ["FailureLimiter", "Secrets", "LOGIN_TOKEN_SECONDS", "MAX_LOGIN_TOKENS", "SESSION_SECONDS", "MAX_SESSIONS",
           "FAILURES_PER_ADDRESS", "FAILURES_IN_ALL", "FAILURE_WINDOW_SECONDS"]

LOGIN_TOKEN_SECONDS: Final = 15 * 60  # a login URL works once, within this time
MAX_LOGIN_TOKENS: Final = 16  # unused login tokens kept; a new one makes the oldest unusable
SESSION_SECONDS: Final = 8 * 3600  # a session ends this long after its login
MAX_SESSIONS: Final = 16  # open sessions; a new login ends the oldest
FAILURES_PER_ADDRESS: Final = 10  # failed tries from one address per window before it is refused
FAILURES_IN_ALL: Final = 100  # failed tries from all addresses per window before everyone is refused
FAILURE_WINDOW_SECONDS: Final = 60.0
MAX_TRACKED_ADDRESSES: Final = 10_000  # addresses whose failures are counted; the oldest is forgotten past it


def _digest(secret: str) -> bytes:
    """What is stored and looked up: a secret's hash (a lookup's timing says nothing of the secret)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class Secrets:
    """Random secrets that expire, at most `capacity` of them (the oldest goes first)."""

    def __init__(self, capacity: int, lifetime: float) -> None:
        self.capacity = capacity
        self.lifetime = lifetime
        self._expiry: dict[bytes, float] = {}  # digest -> monotonic expiry; in order of creation

    def __len__(self) -> int:
        self._forget_expired()
        return len(self._expiry)

    def new(self, lifetime: float | None = None) -> str:
        self._forget_expired()
        while len(self._expiry) >= self.capacity:
            del self._expiry[next(iter(self._expiry))]
        secret = secrets.token_urlsafe(32)
        self._expiry[_digest(secret)] = time.monotonic() + (self.lifetime if lifetime is None else lifetime)
        return secret

    def valid(self, secret: str) -> bool:
        expiry = self._expiry.get(_digest(secret))
        return expiry is not None and time.monotonic() < expiry

    def take(self, secret: str) -> bool:
        """Whether `secret` is valid; it is not any more either way (a login token works once)."""
        expiry = self._expiry.pop(_digest(secret), None)
        return expiry is not None and time.monotonic() < expiry

    def discard(self, secret: str) -> None:
        self._expiry.pop(_digest(secret), None)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for digest in [d for d, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[digest]


class FailureLimiter:
    """Failed tries per address and in all, in fixed windows of `window` seconds."""

    def __init__(self, per_address: int = FAILURES_PER_ADDRESS, in_all: int = FAILURES_IN_ALL,
                 window: float = FAILURE_WINDOW_SECONDS) -> None:
        self.per_address = per_address
        self.in_all = in_all
        self.window = window
        self._addresses: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)
        self._all = (0.0, 0)

    def refused_for(self, address: str) -> float:
        """Seconds until `address` may try again (0: it may now)."""
        now = time.monotonic()
        wait = 0.0
        for (start, count), limit in ((self._addresses.get(address, (0.0, 0)), self.per_address),
                                      (self._all, self.in_all)):
            if count >= limit and now < start + self.window:
                wait = max(wait, start + self.window - now)
        return wait

    def failed(self, address: str) -> None:
        now = time.monotonic()
        self._all = self._counted(self._all, now)
        start, count = self._counted(self._addresses.pop(address, (0.0, 0)), now)
        while len(self._addresses) >= MAX_TRACKED_ADDRESSES:
            del self._addresses[next(iter(self._addresses))]
        self._addresses[address] = (start, count)  # last in the order: the most recently seen

    def _counted(self, entry: tuple[float, int], now: float) -> tuple[float, int]:
        start, count = entry
        if now >= start + self.window:
            return now, 1
        return start, count + 1
