"""Broker failures that callers answer in a documented way (REST: 503)."""

__all__ = ["BrokerUnavailable"]


class BrokerUnavailable(Exception):
    """The broker cannot take the operation now (Redis is down): refused, never dropped silently."""
