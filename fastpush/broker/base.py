"""What a broker is, and what it is told and asks in return.

The Node owns the broker. The broker moves operations to the nodes they concern and answers
questions about the whole cluster; it hands each operation that arrives to the `BrokerHandler`
the node registered (as centrifuge's engines call their event handler), and never reads a hub.
A hub tells the broker's `Registry` side what changes among its own connections, as plain facts
(which connection, which group, whether it was the first or last local member), so the cluster
can route to this node and answer questions about it.

Every call that may need the network returns an `Outcome` (see fastpush.outcome): MemoryBroker
answers at once, RedisBroker with an awaitable.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import NotRequired, Protocol, TypedDict, TypeVar

import msgspec

from ..ops import Op, Operation, Query, Question
from ..outcome import Outcome

__all__ = ["Broker", "BrokerHandler", "BrokerHealth", "Registry", "Member", "LocalHub", "SessionReservation"]

R = TypeVar("R")


class Member(Protocol):
    """A local connection as the cluster records it."""

    @property
    def connection_id(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def roles(self) -> Collection[str]: ...
    @property
    def groups(self) -> Collection[str]: ...


class LocalHub(msgspec.Struct, frozen=True):
    """One hub's part on this node, written to the cluster again after a broker reconnects."""

    name: str
    members: tuple[Member, ...]
    user_groups: Mapping[str, Collection[str]]  # user -> groups its future connections join


class SessionReservation(msgspec.Struct, frozen=True):
    """A reliable session its holder agreed to give up to this node (the first step of a move):
    what it is (`identity`: fastpush.reliable's state without the buffered messages), and the
    token the move must show."""

    hub: str
    connection_id: str
    token: str
    identity: bytes


class BrokerHealth(TypedDict):
    broker: str
    healthy: bool
    node: NotRequired[str]  # a cluster broker's name for this node
    error: NotRequired[str | None]  # why it is not healthy


class BrokerHandler(Protocol):
    """The node, as its broker sees it."""

    def apply(self, op: Op) -> object:
        """Apply an operation to this node's connections; its result (see fastpush.ops)."""

    def answer(self, question: Query) -> object:
        """Answer a question from this node's connections alone (the one-node cluster)."""

    def describe_session(self, hub: str, connection_id: str, token: str | None,
                         subprotocol: str | None) -> bytes | None:
        """A reliable session held here that another node asks for (its client recovered there):
        its identity, if `token` and `subprotocol` may resume it; it stays here until it moves.
        Raises SessionMoving while the session is still moving onto this node."""

    def give_up_session(self, hub: str, connection_id: str) -> bytes | None:
        """The session moves away at this instant: its state, every buffered message included,
        and it ends here without a `disconnected` event (None: it is not here any more)."""

    def local_hubs(self) -> Iterable[LocalHub]:
        """Every hub with something on this node."""


class Registry(Protocol):
    """What a hub tells the cluster about its own connections."""

    def connection_added(self, hub: str, member: Member) -> None: ...
    def connection_removed(self, hub: str, member: Member) -> None: ...

    def group_joined(self, hub: str, member: Member, group: str, first: bool) -> Awaitable[object] | None:
        """`first`: no other local member. What to await before sends to the group reach this
        node from everywhere (None: they already do)."""

    def group_left(self, hub: str, member: Member, group: str, last: bool) -> None: ...
    def roles_changed(self, hub: str, member: Member) -> None: ...


class Broker(Registry, Protocol):
    name: str

    async def start(self, handler: BrokerHandler) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> BrokerHealth: ...

    def publish(self, op: Operation[R]) -> Outcome[R]:
        """Apply `op` on every node its route names; for a confirmed one, once all have."""

    def ask(self, question: Question[R]) -> Outcome[R]:
        """The answer for the whole cluster."""

    def prepare_connection(self, hub: str, user_id: str | None, groups: tuple[str, ...]) -> Outcome[tuple[str, ...]]:
        """Before a client is admitted: the groups its user was added to cluster-wide, with every
        subscription it needs already in force, so nothing sent after it connects can miss it."""

    def take_session(self, hub: str, connection_id: str, token: str | None,
                     subprotocol: str | None) -> Outcome[SessionReservation | None]:
        """A reliable session another node holds, reserved for this node, or None (nowhere, or
        the token did not match)."""

    def move_session(self, reservation: SessionReservation, arrived: Callable[[], None]) -> Outcome[bytes | None]:
        """Move a reserved session here, once this node's subscriptions for it are in force.
        `arrived` is called at the instant it moves: what is sent to it from then on reaches this
        node, and nothing before. The result is its state as the holder gave it up at that same
        instant, or None: not moved (`arrived` not called), or moved and its state lost."""

    def begin_drain(self) -> None:
        """This node is leaving: the others no longer count it as a place for sessions to go."""

    def others_serving(self) -> Outcome[bool]:
        """Whether another node that is not leaving is alive, to take this node's sessions."""
