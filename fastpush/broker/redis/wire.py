"""The wire version of what nodes exchange through Redis, and what a node does with a message it
must not act on.

Every envelope a node publishes (fastpush.broker.redis.bus) is a msgpack array whose first
element is WIRE_VERSION; the operations, replies and session states inside it are of that
version too. A node acts only on its own version: another node's message of another version, or
bytes that are no envelope at all, are dropped, counted (fastpush_broker_dropped_messages_total)
and logged at most once a minute, and the node goes on with everything else. Each node also
writes its version as the value of its `alive:{node}` key, so a node about to join a Redis
whose live nodes speak another version can refuse to start (ClusterRegistry.foreign_nodes).

WIRE_VERSION changes whenever a node of one version could misread a message of the other: a
field of Envelope, of an operation (fastpush.ops) or of a session's state added, removed or
changed. Versions start at FIRST_VERSION: an envelope of the fastpush releases before versions
starts with its kind (0 to 3) where a versioned one has its version, so it reads as unversioned.
Whatever else a later version changes, its envelope stays a msgpack array with the version first:
that is how each version recognises the others.
"""
from __future__ import annotations

import logging
import time
from typing import Final

import msgspec

from ...logs import one_line
from ...metrics.counters import COUNTERS

__all__ = ["WIRE_VERSION", "FIRST_VERSION", "LOG_EVERY_SECONDS", "version_of", "describe_version", "DroppedMessages",
           "OtherWireVersion"]

log = logging.getLogger("fastpush.broker")
FIRST_VERSION: Final = 4
WIRE_VERSION: Final = 4
LOG_EVERY_SECONDS: Final = 60.0


class OtherWireVersion(Exception):
    """A node cannot join this Redis: live nodes there speak another wire version."""


class _Head(msgspec.Struct, array_like=True):
    """The first element of any envelope, whatever its version (trailing elements are ignored)."""

    version: int


_read_head = msgspec.msgpack.Decoder(_Head).decode


def version_of(envelope: bytes) -> int | None:
    """The wire version `envelope` was written in; None when it is no msgpack array starting with
    an integer. (OperationBus.on_message checks its own version inline, in two byte compares, and
    calls this for what fails them.)"""
    try:
        return _read_head(envelope).version
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def describe_version(version: int) -> str:
    return str(version) if version >= FIRST_VERSION else "unversioned (a fastpush from before wire versions)"


class DroppedMessages:
    """Counts every dropped message; logs one line a minute at most, with the drops since the last
    line (a flood of foreign messages must not flood the log)."""

    def __init__(self, node_id: str, every: float = LOG_EVERY_SECONDS) -> None:
        self._node_id = node_id
        self._every = every
        self._next_line = 0.0
        self._since_line = 0

    def drop(self, reason: str, channel: bytes, detail: str) -> None:
        COUNTERS.node_message_dropped(reason)
        self._since_line += 1
        now = time.monotonic()
        if now < self._next_line:
            return
        self._next_line = now + self._every
        fields = {"event": "node_message_dropped", "reason": reason, "detail": one_line(detail),
                  "channel": one_line(channel.decode(errors="replace")), "dropped": self._since_line}
        self._since_line = 0
        log.warning("node %s dropped a message from Redis on %s (%s): %s; %d dropped since the last such line "
                    "(at most one a minute)", self._node_id, fields["channel"], reason, fields["detail"],
                    fields["dropped"], extra=fields)
