"""What an operator can do from the dashboard: close a connection, send to a hub, a group, a user
or a connection, and mint a client token for the test client.

Each builds the same operation (fastpush.ops) that the REST API builds for the same call, after
the same name and payload checks, and submits it to the node: with Redis it reaches every node,
as a REST call would. Bodies are JSON, decoded into the Structs below (a wrong type is a 400).
"""
from __future__ import annotations

from typing import Final, Literal
from urllib.parse import quote

import msgspec

from .. import ops
from ..auth.tokens import KeyRing
from ..node import Node
from ..outcome import Outcome
from ..permissions import RoleError, check_roles
from ..protocol.names import group_error, hub_error, is_valid_group, is_valid_hub, is_valid_user, user_error
from ..protocol.payload import PayloadError, payload_from_rest

__all__ = ["ActionError", "CloseBody", "SendBody", "TokenBody", "close_connection", "client_token", "send",
           "MAX_TOKEN_MINUTES"]

MAX_TOKEN_MINUTES: Final = 24 * 60  # the longest a test client's token may live


class ActionError(Exception):
    """A request the dashboard refuses, with the message shown to the operator (400)."""


class CloseBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


class SendBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    data: str
    target: Literal["all", "group", "user", "connection"] = "all"
    name: str | None = None  # the group, user or connection; none for "all"
    content_type: str = "text/plain"


class TokenBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    hub: str
    user_id: str | None = None
    roles: list[str] = msgspec.field(default_factory=list)
    groups: list[str] = msgspec.field(default_factory=list)
    minutes: int = 60


def close_connection(node: Node, hub: str, connection_id: str, body: CloseBody) -> Outcome[None]:
    _check_hub(hub)
    return node.submit(ops.CloseConnection(hub, connection_id, body.reason or None))


def send(node: Node, hub: str, body: SendBody) -> Outcome[None]:
    _check_hub(hub)
    try:
        payload = payload_from_rest(body.content_type, body.data.encode())
    except PayloadError as exc:
        raise ActionError(str(exc)) from None
    name = body.name
    if body.target == "all":
        return node.submit(ops.SendToAll(hub, payload))
    if not name:
        raise ActionError(f"Sending to a {body.target} needs its name.")
    if body.target == "group":
        if not is_valid_group(name):
            raise ActionError(group_error(name))
        return node.submit(ops.SendToGroup(hub, name, payload))
    if body.target == "user":
        return node.submit(ops.SendToUser(hub, name, payload))
    return node.submit(ops.SendToConnection(hub, name, payload))


def client_token(keyring: KeyRing, endpoint: str, body: TokenBody) -> dict[str, str]:
    """A signed client token for the test client, and the path (with the token) to connect to."""
    _check_hub(body.hub)
    if body.user_id is not None and body.user_id != "" and not is_valid_user(body.user_id):
        raise ActionError(user_error(body.user_id))
    for group in body.groups:
        if not is_valid_group(group):
            raise ActionError(group_error(group))
    try:
        check_roles(body.roles)
    except RoleError as exc:
        raise ActionError(f"Role: {exc}") from None
    if not 1 <= body.minutes <= MAX_TOKEN_MINUTES:
        raise ActionError(f"A token lives 1 to {MAX_TOKEN_MINUTES} minutes.")
    token = keyring.issue_client(endpoint, body.hub, user_id=body.user_id or None, roles=body.roles,
                                 groups=body.groups, minutes_to_expire=body.minutes)
    return {"token": token, "path": f"/client/hubs/{quote(body.hub, safe='')}?access_token={token}"}


def _check_hub(hub: str) -> None:
    if not is_valid_hub(hub):
        raise ActionError(hub_error(hub))
