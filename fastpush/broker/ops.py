"""Every cluster-wide operation as a value: what a node publishes and what each node applies to
its own connections. msgpack-serializable, so RedisBroker can ship them as they are."""
from __future__ import annotations

import msgspec

from ..protocol.payload import Payload

__all__ = [
    "Op", "SendToAll", "SendToGroup", "SendToUser", "SendToConnection", "AddConnectionToGroup",
    "RemoveConnectionFromGroup", "RemoveConnectionFromAllGroups", "AddUserToGroup", "RemoveUserFromGroup",
    "RemoveUserFromAllGroups", "AddConnectionsToGroups", "RemoveConnectionsFromGroups", "CloseConnection",
    "CloseAll", "CloseGroup", "CloseUser", "GrantPermission", "RevokePermission", "encode", "decode",
]


class _Op(msgspec.Struct, frozen=True, tag=True, array_like=True):
    hub: str


class SendToAll(_Op, frozen=True):
    payload: Payload
    excluded: tuple[str, ...] = ()
    filter: str | None = None


class SendToGroup(_Op, frozen=True):
    group: str
    payload: Payload
    excluded: tuple[str, ...] = ()
    filter: str | None = None
    from_user_id: str | None = None


class SendToUser(_Op, frozen=True):
    user_id: str
    payload: Payload
    filter: str | None = None


class SendToConnection(_Op, frozen=True):
    connection_id: str
    payload: Payload


class AddConnectionToGroup(_Op, frozen=True):
    group: str
    connection_id: str


class RemoveConnectionFromGroup(_Op, frozen=True):
    group: str
    connection_id: str


class RemoveConnectionFromAllGroups(_Op, frozen=True):
    connection_id: str


class AddUserToGroup(_Op, frozen=True):
    group: str
    user_id: str


class RemoveUserFromGroup(_Op, frozen=True):
    group: str
    user_id: str


class RemoveUserFromAllGroups(_Op, frozen=True):
    user_id: str


class AddConnectionsToGroups(_Op, frozen=True):
    groups: tuple[str, ...]
    filter: str | None = None


class RemoveConnectionsFromGroups(_Op, frozen=True):
    groups: tuple[str, ...]
    filter: str | None = None


class CloseConnection(_Op, frozen=True):
    connection_id: str
    reason: str | None = None


class CloseAll(_Op, frozen=True):
    excluded: tuple[str, ...] = ()
    reason: str | None = None


class CloseGroup(_Op, frozen=True):
    group: str
    excluded: tuple[str, ...] = ()
    reason: str | None = None


class CloseUser(_Op, frozen=True):
    user_id: str
    excluded: tuple[str, ...] = ()
    reason: str | None = None


class GrantPermission(_Op, frozen=True):
    permission: str
    connection_id: str
    target: str | None = None


class RevokePermission(_Op, frozen=True):
    permission: str
    connection_id: str
    target: str | None = None


Op = (SendToAll | SendToGroup | SendToUser | SendToConnection | AddConnectionToGroup | RemoveConnectionFromGroup
      | RemoveConnectionFromAllGroups | AddUserToGroup | RemoveUserFromGroup | RemoveUserFromAllGroups
      | AddConnectionsToGroups | RemoveConnectionsFromGroups | CloseConnection | CloseAll | CloseGroup | CloseUser
      | GrantPermission | RevokePermission)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Op)


def encode(op: Op) -> bytes:
    return _encoder.encode(op)


def decode(data: bytes) -> Op:
    return _decoder.decode(data)
