"""The one-process broker: an operation is applied at once, and the cluster is this node."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .ops import Op

if TYPE_CHECKING:
    from ..fanout import Connection
    from ..hub import Hub

__all__ = ["MemoryBroker"]


class MemoryBroker:
    """Everything is local and synchronous: sends frame and write before they return."""

    name = "memory"

    async def start(self, node) -> None:
        pass

    async def stop(self) -> None:
        pass

    def health(self) -> dict:
        return {"broker": self.name, "healthy": True}

    # --- operations and queries ---------------------------------------------------------------
    def publish(self, hub: Hub, op: Op):
        return hub.apply(op)

    def connection_exists(self, hub: Hub, connection_id: str) -> bool:
        return hub.local_connection_exists(connection_id)

    def group_exists(self, hub: Hub, group: str) -> bool:
        return hub.local_group_exists(group)

    def user_exists(self, hub: Hub, user_id: str) -> bool:
        return hub.local_user_exists(user_id)

    def has_permission(self, hub: Hub, permission: str, connection_id: str, target: str | None) -> bool:
        return hub.local_has_permission(permission, connection_id, target)

    def group_members(self, hub: Hub, group: str) -> list[tuple[str, str | None]]:
        return hub.local_group_members(group)

    def take_session(self, hub: Hub, connection_id: str, token: str | None, subprotocol: str | None) -> None:
        """A session is either on this node or nowhere."""
        return None

    def prepare_connection(self, hub: Hub, user_id: str | None, groups: tuple[str, ...]) -> None:
        """Nothing to prepare: the hub knows its users' groups itself."""
        return None

    # --- local changes the cluster would need to know about -----------------------------------
    def connection_added(self, hub: Hub, conn: Connection) -> None:
        pass

    def connection_removed(self, hub: Hub, conn: Connection) -> None:
        pass

    def group_joined(self, hub: Hub, conn: Connection, group: str) -> None:
        pass

    def group_left(self, hub: Hub, conn: Connection, group: str) -> None:
        pass

    def roles_changed(self, hub: Hub, conn: Connection) -> None:
        pass
