"""The one-process broker: the cluster is this node, so everything happens before the call returns."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from ..ops import Op, Operation, Query, Question
from .base import BrokerHandler, BrokerHealth, Member, SessionReservation

__all__ = ["MemoryBroker"]

R = TypeVar("R")


class MemoryBroker:
    """Sends frame and write before they return; questions are answered from this node's tables."""

    name = "memory"

    def __init__(self) -> None:
        self._handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def stop(self) -> None:
        self._handler = None

    def health(self) -> BrokerHealth:
        return {"broker": self.name, "healthy": True}

    def _node(self) -> BrokerHandler:
        if self._handler is None:
            raise RuntimeError("the broker is not started")
        return self._handler

    # Every Operation is a member of the Op union (every Question of Query), and the node answers
    # with the result type its class names (fastpush.ops): both casts restate that.
    def publish(self, op: Operation[R]) -> R:
        return cast(R, self._node().apply(cast(Op, op)))

    def ask(self, question: Question[R]) -> R:
        return cast(R, self._node().answer(cast(Query, question)))

    def prepare_connection(self, hub: str, user_id: str | None, groups: tuple[str, ...]) -> tuple[str, ...]:
        """Nothing to prepare: the hub knows its users' groups itself."""
        return ()

    def take_session(self, hub: str, connection_id: str, token: str | None, subprotocol: str | None) -> None:
        """A session is either on this node or nowhere."""
        return None

    def move_session(self, reservation: SessionReservation, arrived: Callable[[], None]) -> None:
        """Never asked: nothing is ever reserved here."""
        return None

    def begin_drain(self) -> None:
        pass

    def others_serving(self) -> bool:
        """This node is the whole cluster: a leaving node's sessions have nowhere to go."""
        return False

    # --- a one-node cluster has nobody to tell ---------------------------------------------------
    def connection_added(self, hub: str, member: Member) -> None:
        pass

    def connection_removed(self, hub: str, member: Member) -> None:
        pass

    def group_joined(self, hub: str, member: Member, group: str, first: bool) -> None:
        pass

    def group_left(self, hub: str, member: Member, group: str, last: bool) -> None:
        pass

    def roles_changed(self, hub: str, member: Member) -> None:
        pass
