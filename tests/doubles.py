"""Socket-free stand-ins for tests of hubs, nodes and brokers.

`FakeConnection` is a real `fastpush._fanout.Connection` (the compiled class the hub's tables and
fan-out loop take) with no socket: a reliable session whose client is away. The fan-out loop
numbers and keeps every message sent to such a session in its replay buffer until the client
comes back, so `received` reads what was sent to it through the real hot path, and nothing is
written anywhere. Its `close` records what it was asked instead of closing a socket.

`RecordingRegistry` is the `Registry` a hub reports its own connections to, writing down each fact.
"""
from __future__ import annotations

from collections.abc import Iterable

from fastpush import fanout as _fanout
from fastpush.broker.base import Member
from fastpush.protocol.json_protocol import GroupSource, ServerSource
from fastpush.protocol.variants import Variant

__all__ = ["FakeConnection", "RecordingRegistry", "Close"]

RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"
Close = tuple[int, str, bool]  # (code, reason, notify)


class FakeConnection(_fanout.Connection):
    def __init__(self, connection_id: str, user_id: str | None = None, hub: str = "chat",
                 roles: Iterable[str] = ()) -> None:
        super().__init__(connection_id, user_id, hub, RELIABLE_SUBPROTOCOL, Variant.JSON_RELIABLE)
        roles = set(roles)
        if roles:
            self.roles = roles
        self.closes: list[Close] = []

    def close(self, code: int, reason: str, notify: bool = False) -> None:
        self.closes.append((int(code), reason, notify))

    @property
    def received(self) -> list[tuple[str, ServerSource | GroupSource]]:
        """Each message sent to this connection, oldest first: (its text, where it came from)."""
        return [(frames.payload.data.decode(), frames.source) for frames in self.replay or ()]

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.received]

    def __repr__(self) -> str:
        return f"FakeConnection({self.connection_id!r}, user={self.user_id!r})"


class RecordingRegistry:
    """Every fact a hub reports, in order, as tuples naming the connection by its id."""

    def __init__(self, join_result: object = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.join_result = join_result  # what group_joined answers for a first member (what to await)

    def connection_added(self, hub: str, member: Member) -> None:
        self.calls.append(("added", hub, member.connection_id))

    def connection_removed(self, hub: str, member: Member) -> None:
        self.calls.append(("removed", hub, member.connection_id))

    def group_joined(self, hub: str, member: Member, group: str, first: bool) -> object:
        self.calls.append(("joined", hub, member.connection_id, group, first))
        return self.join_result if first else None

    def group_left(self, hub: str, member: Member, group: str, last: bool) -> None:
        self.calls.append(("left", hub, member.connection_id, group, last))

    def roles_changed(self, hub: str, member: Member) -> None:
        self.calls.append(("roles", hub, member.connection_id, sorted(member.roles)))

    def take(self) -> list[tuple[object, ...]]:
        """The calls since the last take."""
        calls, self.calls = self.calls, []
        return calls
