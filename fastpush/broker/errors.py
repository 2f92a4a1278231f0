"""Broker failures that callers answer in a documented way (REST: 503)."""

__all__ = ["BrokerUnavailable", "SessionMoving"]


class BrokerUnavailable(Exception):
    """The broker cannot take the operation now (Redis is down): refused, never dropped silently."""


class SessionMoving(BrokerUnavailable):
    """A reliable session is on its way between nodes right now: asked again in a moment, it is
    where it goes (a recovery gets 503, and the SDKs try again)."""
