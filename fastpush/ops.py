"""The vocabulary of the server: every operation and question about a hub, as a value.

REST handlers, the embedding API and the client protocol build these and hand them to the Node;
`Hub.apply` (and `Hub.answer` for questions) is where each takes effect on one node's
connections. An operation carries the facts a cluster needs to move it, so no broker keeps a
table of operation types:

- `route`: which nodes must apply it (every node in the hub, the members of `group`, the
  connections of `user_id`, or the one holding `connection_id`), read from the field of that name;
- `confirmed`: whether the caller waits until every receiving node has applied it (membership,
  permissions and closes are; sends are not);
- its result type, the `R` of `Op[R]`: `None`, or `bool` for "was the connection there"
  (`reports_missing`), which a cluster folds over the nodes' answers with `any`.

Adding an operation: its Struct here (and in the `Op` union), its case in `Hub.apply`, its REST
route. Adding a question: its Struct, its case in `Hub.answer`, in the Redis registry's
`answer`, and its REST route. All are msgpack-serializable, so a broker ships them as they are.
"""
from __future__ import annotations

import enum
from typing import ClassVar, Generic, TypeVar

import msgspec

from .lastvalue import Cached
from .protocol.json_protocol import StreamInfo
from .protocol.payload import Payload

__all__ = [
    "Route", "Operation", "Question", "Op", "Query",
    "SendToAll", "SendToGroup", "SendToUser", "SendToConnection",
    "AddConnectionToGroup", "RemoveConnectionFromGroup", "RemoveConnectionFromAllGroups",
    "AddUserToGroup", "RemoveUserFromGroup", "RemoveUserFromAllGroups",
    "AddConnectionsToGroups", "RemoveConnectionsFromGroups",
    "CloseConnection", "CloseAll", "CloseGroup", "CloseUser", "GrantPermission", "RevokePermission",
    "ConnectionExists", "GroupExists", "UserExists", "HasPermission", "GroupMembers", "Member", "LastValue",
    "encode", "decode",
]

R = TypeVar("R", covariant=True)
Member = tuple[str, str | None]  # (connectionId, userId)


class Route(enum.Enum):
    """Which nodes an operation concerns."""

    HUB = "hub"  # every node with connections in the hub
    GROUP = "group"  # the nodes with members of `group`
    USER = "user"  # the nodes with connections of `user_id`
    CONNECTION = "connection"  # the node holding `connection_id`


class Operation(msgspec.Struct, Generic[R], frozen=True, tag=True, array_like=True):
    """Something that changes or sends: published to the nodes its route names."""

    hub: str
    route: ClassVar[Route] = Route.HUB
    confirmed: ClassVar[bool] = True
    reports_missing: ClassVar[bool] = False  # the result says whether the target connection was found

    @property
    def routing_key(self) -> str:
        """The name `route` picks nodes by: the group, user or connection; for Route.HUB, the hub."""
        return self.hub


class _ToGroup(Operation[R], Generic[R], frozen=True):
    group: str
    route: ClassVar[Route] = Route.GROUP

    @property
    def routing_key(self) -> str:
        return self.group


class _ToUser(Operation[R], Generic[R], frozen=True):
    user_id: str
    route: ClassVar[Route] = Route.USER

    @property
    def routing_key(self) -> str:
        return self.user_id


class _ToConnection(Operation[R], Generic[R], frozen=True):
    connection_id: str
    route: ClassVar[Route] = Route.CONNECTION

    @property
    def routing_key(self) -> str:
        return self.connection_id


# --- sends: not confirmed (a caller is answered once the cluster has the message) ----------------
# `expires_at`: the wall-clock time (Unix seconds) after which no connection may be sent the message,
# absolute so that a node receiving it late still knows (fastpush.expiry); 0.0: it never expires.
class SendToAll(Operation[None], frozen=True):
    payload: Payload
    excluded: tuple[str, ...] = ()
    filter: str | None = None
    expires_at: float = 0.0
    confirmed: ClassVar[bool] = False


class SendToGroup(_ToGroup[None], frozen=True):
    payload: Payload
    excluded: tuple[str, ...] = ()
    filter: str | None = None
    from_user_id: str | None = None  # a client's own send: its user, told to the receivers
    expires_at: float = 0.0
    stream: StreamInfo | None = None  # a group stream's fragment or end (fastpush.streams)
    last_value_seq: int = 0  # to a cached group through Redis: its place in the hub's order (fastpush.lastvalue)
    confirmed: ClassVar[bool] = False


class SendToUser(_ToUser[None], frozen=True):
    payload: Payload
    filter: str | None = None
    expires_at: float = 0.0
    confirmed: ClassVar[bool] = False


class SendToConnection(_ToConnection[None], frozen=True):
    payload: Payload
    expires_at: float = 0.0
    confirmed: ClassVar[bool] = False


# --- membership ----------------------------------------------------------------------------------
class AddConnectionToGroup(_ToConnection[bool], frozen=True):
    group: str
    reports_missing: ClassVar[bool] = True


class RemoveConnectionFromGroup(_ToConnection[None], frozen=True):
    group: str


class RemoveConnectionFromAllGroups(_ToConnection[None], frozen=True):
    pass


# A user's groups go to every node of the hub (Route.HUB): any of them may get a connection of the
# user later, and each keeps the record for its own future connections.
class AddUserToGroup(Operation[None], frozen=True):
    """The user's connections join now, and its future ones when they connect."""

    user_id: str
    group: str


class RemoveUserFromGroup(Operation[None], frozen=True):
    user_id: str
    group: str


class RemoveUserFromAllGroups(Operation[None], frozen=True):
    user_id: str


class AddConnectionsToGroups(Operation[None], frozen=True):
    groups: tuple[str, ...]
    filter: str | None = None


class RemoveConnectionsFromGroups(Operation[None], frozen=True):
    groups: tuple[str, ...]
    filter: str | None = None


# --- closing ---------------------------------------------------------------------------------------
class CloseConnection(_ToConnection[None], frozen=True):
    reason: str | None = None


class CloseAll(Operation[None], frozen=True):
    excluded: tuple[str, ...] = ()
    reason: str | None = None


class CloseGroup(_ToGroup[None], frozen=True):
    excluded: tuple[str, ...] = ()
    reason: str | None = None


class CloseUser(_ToUser[None], frozen=True):
    excluded: tuple[str, ...] = ()
    reason: str | None = None


# --- permissions -------------------------------------------------------------------------------------
class GrantPermission(_ToConnection[bool], frozen=True):
    permission: str
    target: str | None = None  # a group; None: every group
    reports_missing: ClassVar[bool] = True


class RevokePermission(_ToConnection[None], frozen=True):
    permission: str
    target: str | None = None


Op = (SendToAll | SendToGroup | SendToUser | SendToConnection | AddConnectionToGroup | RemoveConnectionFromGroup
      | RemoveConnectionFromAllGroups | AddUserToGroup | RemoveUserFromGroup | RemoveUserFromAllGroups
      | AddConnectionsToGroups | RemoveConnectionsFromGroups | CloseConnection | CloseAll | CloseGroup | CloseUser
      | GrantPermission | RevokePermission)


# --- questions: answered from what the cluster knows (one node: its own connections) ------------------
class Question(msgspec.Struct, Generic[R], frozen=True):
    hub: str


class ConnectionExists(Question[bool], frozen=True):
    """A reliable connection that lost its socket exists while it may recover."""

    connection_id: str


class GroupExists(Question[bool], frozen=True):
    group: str


class UserExists(Question[bool], frozen=True):
    user_id: str


class HasPermission(Question[bool], frozen=True):
    permission: str
    connection_id: str
    target: str | None = None


class GroupMembers(Question[list[Member]], frozen=True):
    """Sorted by connection id, for paged listing."""

    group: str


class LastValue(Question[list[Cached] | None], frozen=True):
    """A group's cached messages, oldest first, expired ones left out (fastpush.lastvalue); None
    when the hub does not cache the group."""

    group: str


Query = ConnectionExists | GroupExists | UserExists | HasPermission | GroupMembers | LastValue

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Op)


def encode(op: Op) -> bytes:
    return _encoder.encode(op)


def decode(data: bytes) -> Op:
    return _decoder.decode(data)
