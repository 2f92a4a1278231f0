"""The REST data plane (api-version 2024-12-01 and older): parse → Hub call → exact status code.

Routing splits the path into percent-decoded segments, so a group named `a/b` (sent as `a%2Fb`)
stays one segment; a token's audience is read the same way (fastpush.auth.tokens.path_segments).
"""
from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import msgspec

from .. import ops
from ..auth.tokens import KeyRing, TokenError, path_segments
from ..broker.errors import BrokerUnavailable
from ..expiry import NEVER, expires_at
from ..lastvalue import Cached, render
from ..metrics.counters import COUNTERS
from ..node import Node
from ..outcome import Outcome, then
from ..permissions import Permission, RoleError, check_roles
from ..protocol.names import (
    UNSERVED_CLIENTS,
    group_error,
    hub_error,
    is_valid_group,
    is_valid_hub,
    is_valid_user,
    user_error,
)
from ..protocol.odata_filter import FilterError, compile_filter
from ..protocol.payload import Payload, PayloadError, UnsupportedMediaType, decode_json, payload_from_rest
from ..protocol.ttl import TtlError, parse_ttl
from .messages import Request, Response, empty_response, error_response, json_response

__all__ = ["RestApi", "MAX_BODY_BYTES"]

log = logging.getLogger("fastpush.rest")

MAX_BODY_BYTES = 1024 * 1024
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_MAX_PAGE_SIZE = 200
_json_decode = msgspec.json.Decoder().decode


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "BadRequest"):
        super().__init__(message)
        self.status = status
        self.code = code


class _GroupsBody(msgspec.Struct):
    groups: list[str]
    filter: str | None = None


Respond = Callable[[Any], Response]
Answer = Outcome[Response]


class RestApi:
    """Each handler checks its input, builds one operation or question (fastpush.ops), hands it
    to the node and says how to answer with its result."""

    def __init__(self, node: Node, keyring: KeyRing, public_endpoint: Callable[[], str]) -> None:
        self.node = node
        self.keyring = keyring
        self.public_endpoint = public_endpoint  # Server.endpoint: known only once the port is bound

    def handle(self, request: Request) -> Answer:
        """Answer one request (or an awaitable of the answer, with a cluster broker); never raises.
        Each is counted, by operation and status, and timed until its answer is ready (metrics)."""
        started = time.perf_counter()
        operation, answer = self._answer(request, started)
        if isinstance(answer, Response):
            COUNTERS.rest_request(operation, answer.status, time.perf_counter() - started)
        return answer

    def _answer(self, request: Request, started: float) -> tuple[str, Answer]:
        """The operation's name (its handler's; "health"; "unknown" for no route) and the answer."""
        segments = path_segments(request.raw_path)
        if segments[:2] == ["api", "health"] and len(segments) == 2:
            if request.method in ("GET", "HEAD"):
                # 200 while this node serves its clients; the broker's state is in the details.
                broker = self.node.broker.health()
                status = "healthy" if broker["healthy"] else "degraded"
                return "health", json_response(200, {"status": status, "broker": broker})
            return "health", error_response(405, "MethodNotAllowed", "Use GET or HEAD on /api/health.")
        if len(segments) < 4 or segments[0] != "api" or segments[1] != "hubs":
            return "unknown", error_response(404, "NotFound", f"No REST operation at '{request.raw_path}'.")
        route = _match(request.method, segments[3:])
        if route is None:
            return "unknown", error_response(404, "NotFound", f"No operation '{request.method} {request.raw_path}'.")
        handler, args = route
        return handler.__name__, self._call(handler, args, request, segments[2], started)

    def _call(self, handler: Handler, args: list[str], request: Request, hub: str, started: float) -> Answer:
        """Check the caller's token, the hub's name and the api-version, then run the handler."""
        auth = request.headers.get("authorization")
        if not auth or auth[:7].lower() != "bearer ":
            return error_response(401, "Unauthorized", "Missing 'Authorization: Bearer <token>' header.")
        try:
            self.keyring.verify_rest(auth[7:].strip(), request.raw_target, self._origins(request))
        except TokenError as exc:
            return error_response(401, "Unauthorized", str(exc))
        try:
            if not is_valid_hub(hub):
                raise BadRequest(hub_error(hub))
            _check_api_version(request)
            answer = handler(self, hub, request, *args)
        except Exception as exc:
            return _error(request, exc)
        if isinstance(answer, Awaitable):
            return _guarded(request, answer, handler.__name__, started)
        return answer

    def _origins(self, request: Request) -> list[str]:
        """The origins this request addresses the server by: its Host header, the public endpoint."""
        origins = [self.public_endpoint()]
        host = request.headers.get("host")
        if host:
            origins.append(f"{'https' if request.secure else 'http'}://{host}")
        return origins

    def _submit(self, op: ops.Operation[Any], respond: Respond) -> Answer:
        return then(self.node.submit(op), respond)

    def _ask(self, question: ops.Question[Any], respond: Respond) -> Answer:
        return then(self.node.ask(question), respond)

    # --- sends ----------------------------------------------------------------------------
    def send_to_all(self, hub: str, request: Request) -> Answer:
        op = ops.SendToAll(hub, _payload(request), _excluded(request), _filter(request), _expires_at(request))
        return self._submit(op, _ACCEPTED)

    def send_to_group(self, hub: str, request: Request, group: str) -> Answer:
        _group(group)
        op = ops.SendToGroup(hub, group, _payload(request), _excluded(request), _filter(request),
                             expires_at=_expires_at(request))
        return self._submit(op, _ACCEPTED)

    def send_to_user(self, hub: str, request: Request, user: str) -> Answer:
        op = ops.SendToUser(hub, user, _payload(request), _filter(request), _expires_at(request))
        return self._submit(op, _ACCEPTED)

    def send_to_connection(self, hub: str, request: Request, connection_id: str) -> Answer:
        op = ops.SendToConnection(hub, connection_id, _payload(request), _expires_at(request))
        return self._submit(op, _ACCEPTED)

    # --- connections ----------------------------------------------------------------------
    def connection_exists(self, hub: str, request: Request, connection_id: str) -> Answer:
        return self._ask(ops.ConnectionExists(hub, connection_id), _FOUND)

    def close_connection(self, hub: str, request: Request, connection_id: str) -> Answer:
        return self._submit(ops.CloseConnection(hub, connection_id, request.query_one("reason")), _DONE)

    def close_all(self, hub: str, request: Request) -> Answer:
        return self._submit(ops.CloseAll(hub, _excluded(request), request.query_one("reason")), _DONE)

    def close_group(self, hub: str, request: Request, group: str) -> Answer:
        _group(group)
        return self._submit(ops.CloseGroup(hub, group, _excluded(request), request.query_one("reason")), _DONE)

    def close_user(self, hub: str, request: Request, user: str) -> Answer:
        return self._submit(ops.CloseUser(hub, user, _excluded(request), request.query_one("reason")), _DONE)

    # --- groups ---------------------------------------------------------------------------
    def group_exists(self, hub: str, request: Request, group: str) -> Answer:
        _group(group)
        return self._ask(ops.GroupExists(hub, group), _FOUND)

    def add_connection_to_group(self, hub: str, request: Request, group: str, connection_id: str) -> Answer:
        _group(group)
        return self._submit(ops.AddConnectionToGroup(hub, connection_id, group), _added_or_missing(connection_id))

    def remove_connection_from_group(self, hub: str, request: Request, group: str, connection_id: str) -> Answer:
        _group(group)
        return self._submit(ops.RemoveConnectionFromGroup(hub, connection_id, group), _DONE)

    def remove_connection_from_all_groups(self, hub: str, request: Request, connection_id: str) -> Answer:
        return self._submit(ops.RemoveConnectionFromAllGroups(hub, connection_id), _DONE)

    def list_group_connections(self, hub: str, request: Request, group: str) -> Answer:
        _group(group)
        page_size = _int_param(request, "maxpagesize", 1, _MAX_PAGE_SIZE, _MAX_PAGE_SIZE)
        assert page_size is not None
        top = _int_param(request, "top", 1, 2**31 - 1, None)
        after = _decode_continuation(request.query_one_ci("continuationToken"))

        def page_of(all_members: list[ops.Member]) -> Response:
            members = [m for m in all_members if after is None or m[0] > after]
            page = members[:page_size if top is None else min(page_size, top)]
            body: dict[str, object] = {"value": [{"connectionId": cid, "userId": user} for cid, user in page]}
            remaining_top = None if top is None else top - len(page)
            if len(members) > len(page) and (remaining_top is None or remaining_top > 0):
                body["nextLink"] = _next_link(request, page[-1][0], page_size, remaining_top)
            return json_response(200, body)
        return self._ask(ops.GroupMembers(hub, group), page_of)

    def add_to_groups(self, hub: str, request: Request) -> Answer:
        groups, filter = _groups_body(request)
        return self._submit(ops.AddConnectionsToGroups(hub, groups, filter), _OK)

    def remove_from_groups(self, hub: str, request: Request) -> Answer:
        groups, filter = _groups_body(request)
        return self._submit(ops.RemoveConnectionsFromGroups(hub, groups, filter), _OK)

    def last_value(self, hub: str, request: Request, group: str) -> Answer:
        """fastpush's own: the group's cached messages (lastValueGroups), oldest first."""
        _group(group)

        def listed(entries: list[Cached] | None) -> Response:
            if entries is None:
                return error_response(404, "NotFound", f"The hub does not keep the last value of group '{group}' "
                                                       "(lastValueGroups in its settings).")
            return json_response(200, render(entries))
        return self._ask(ops.LastValue(hub, group), listed)

    # --- users ----------------------------------------------------------------------------
    def user_exists(self, hub: str, request: Request, user: str) -> Answer:
        return self._ask(ops.UserExists(hub, user), _FOUND)

    def add_user_to_group(self, hub: str, request: Request, user: str, group: str) -> Answer:
        _group(group)
        return self._submit(ops.AddUserToGroup(hub, user, group), _OK)

    def remove_user_from_group(self, hub: str, request: Request, user: str, group: str) -> Answer:
        _group(group)
        return self._submit(ops.RemoveUserFromGroup(hub, user, group), _DONE)

    def remove_user_from_all_groups(self, hub: str, request: Request, user: str) -> Answer:
        return self._submit(ops.RemoveUserFromAllGroups(hub, user), _DONE)

    # --- permissions ----------------------------------------------------------------------
    def grant_permission(self, hub: str, request: Request, permission: str, connection_id: str) -> Answer:
        target = _permission_target(request, permission)
        return self._submit(ops.GrantPermission(hub, connection_id, permission, target),
                            _added_or_missing(connection_id))

    def revoke_permission(self, hub: str, request: Request, permission: str, connection_id: str) -> Answer:
        target = _permission_target(request, permission)
        return self._submit(ops.RevokePermission(hub, connection_id, permission, target), _DONE)

    def check_permission(self, hub: str, request: Request, permission: str, connection_id: str) -> Answer:
        target = _permission_target(request, permission)
        return self._ask(ops.HasPermission(hub, permission, connection_id, target), _FOUND)

    # --- tokens ---------------------------------------------------------------------------
    def generate_token(self, hub: str, request: Request) -> Answer:
        minutes = _int_param(request, "minutesToExpire", 1, 2**31 - 1, 60)
        assert minutes is not None
        _check_client_type(request.query_one("clientType") or "Default")
        groups = request.query.get("group", [])
        for group in groups:
            _group(group)
        roles = request.query.get("role", [])
        try:
            check_roles(roles)
        except RoleError as exc:
            raise BadRequest(f"role: {exc}") from None
        user_id = request.query_one("userId") or None
        if user_id is not None and not is_valid_user(user_id):
            raise BadRequest(user_error(user_id))  # a token with it would be refused on connect
        scheme = "https" if request.secure else "http"
        endpoint = f"{scheme}://{request.headers.get('host', 'localhost')}"
        token = self.keyring.issue_client(endpoint, hub, user_id=user_id,
                                          roles=roles, groups=groups,
                                          minutes_to_expire=minutes)
        return json_response(200, {"token": token})


def _check_client_type(client_type: str) -> None:
    """Only Web PubSub's own clients are served: a token for another kind of client would name
    an endpoint fastpush does not have."""
    kind = client_type.lower()
    if kind in UNSERVED_CLIENTS:
        raise BadRequest(f"clientType={client_type}: {UNSERVED_CLIENTS[kind]} are not supported by fastpush; it "
                         "serves Web PubSub clients (clientType=Default) at /client/hubs/{hub}.")
    if kind != "default":
        raise BadRequest(f"Unknown clientType '{client_type[:64]}': use Default.")


def _groups_body(request: Request) -> tuple[tuple[str, ...], str | None]:
    try:
        body = msgspec.convert(decode_json(request.body or b"null"), _GroupsBody)
    except (PayloadError, msgspec.ValidationError) as exc:
        raise BadRequest(f"Invalid JSON body: {exc}; expected {{\"groups\": [...], \"filter\": \"...\"}}.") from None
    if not body.groups:
        raise BadRequest("'groups' must name at least one group.")
    for group in body.groups:
        _group(group)
    return tuple(body.groups), _valid_filter(body.filter)


def _excluded(request: Request) -> tuple[str, ...]:
    return tuple(request.query.get("excluded", ()))


def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BadRequest):
        return error_response(exc.status, exc.code, str(exc))
    if isinstance(exc, BrokerUnavailable):
        return error_response(503, "ServiceUnavailable", str(exc))
    log.exception("REST %s %s failed", request.method, request.raw_path, exc_info=exc)
    return error_response(500, "InternalServerError", "The server failed to process the request.")


async def _guarded(request: Request, pending: Awaitable[Response], operation: str, started: float) -> Response:
    """The answer once the cluster has given it (an error answer if it failed), counted then."""
    try:
        response = await pending
    except Exception as exc:
        response = _error(request, exc)
    COUNTERS.rest_request(operation, response.status, time.perf_counter() - started)
    return response


Handler = Callable[..., Answer]
_S = "*"  # one path segment captured as an argument
_ROUTES: list[tuple[str, tuple[str, ...], Handler]] = [
    ("POST", (":send",), RestApi.send_to_all),
    ("POST", (":closeConnections",), RestApi.close_all),
    ("POST", (":generateToken",), RestApi.generate_token),
    ("POST", (":addToGroups",), RestApi.add_to_groups),
    ("POST", (":removeFromGroups",), RestApi.remove_from_groups),
    ("HEAD", ("connections", _S), RestApi.connection_exists),
    ("DELETE", ("connections", _S), RestApi.close_connection),
    ("POST", ("connections", _S, ":send"), RestApi.send_to_connection),
    ("DELETE", ("connections", _S, "groups"), RestApi.remove_connection_from_all_groups),
    ("HEAD", ("groups", _S), RestApi.group_exists),
    ("POST", ("groups", _S, ":closeConnections"), RestApi.close_group),
    ("POST", ("groups", _S, ":send"), RestApi.send_to_group),
    ("GET", ("groups", _S, "connections"), RestApi.list_group_connections),
    ("GET", ("groups", _S, "lastValue"), RestApi.last_value),
    ("PUT", ("groups", _S, "connections", _S), RestApi.add_connection_to_group),
    ("DELETE", ("groups", _S, "connections", _S), RestApi.remove_connection_from_group),
    ("PUT", ("permissions", _S, "connections", _S), RestApi.grant_permission),
    ("DELETE", ("permissions", _S, "connections", _S), RestApi.revoke_permission),
    ("HEAD", ("permissions", _S, "connections", _S), RestApi.check_permission),
    ("HEAD", ("users", _S), RestApi.user_exists),
    ("POST", ("users", _S, ":closeConnections"), RestApi.close_user),
    ("POST", ("users", _S, ":send"), RestApi.send_to_user),
    ("DELETE", ("users", _S, "groups"), RestApi.remove_user_from_all_groups),
    ("PUT", ("users", _S, "groups", _S), RestApi.add_user_to_group),
    ("DELETE", ("users", _S, "groups", _S), RestApi.remove_user_from_group),
]


def _match(method: str, rest: list[str]) -> tuple[Handler, list[str]] | None:
    for route_method, pattern, handler in _ROUTES:
        if route_method != method or len(pattern) != len(rest):
            continue
        args = []
        for expected, actual in zip(pattern, rest, strict=True):
            if expected == _S:
                args.append(actual)
            elif expected != actual:
                break
        else:
            return handler, args
    return None


def _check_api_version(request: Request) -> None:
    version = request.query_one("api-version")
    if version is not None and not _API_VERSION.fullmatch(version):
        raise BadRequest(f"Invalid api-version '{version}': expected a date such as 2024-12-01.")


def _expires_at(request: Request) -> float:
    """When the message expires (the wall clock: it may be applied on another node), from
    `messageTtlSeconds`; 0.0 (never) without one or for 0."""
    text = request.query_one("messageTtlSeconds")
    if text is None:
        return NEVER
    try:
        return expires_at(parse_ttl(text))
    except TtlError as exc:
        raise BadRequest(str(exc)) from None


def _payload(request: Request) -> Payload:
    try:
        return payload_from_rest(request.headers.get("content-type"), request.body)
    except UnsupportedMediaType as exc:
        raise BadRequest(str(exc), 415, "UnsupportedMediaType") from None
    except PayloadError as exc:
        raise BadRequest(str(exc)) from None


def _filter(request: Request) -> str | None:
    return _valid_filter(request.query_one("filter"))


def _valid_filter(text: str | None) -> str | None:
    """A filter is checked here, so a bad one is a 400 before anything is sent anywhere."""
    if text is None or not text.strip():
        return None
    try:
        compile_filter(text)
    except FilterError as exc:
        raise BadRequest(f"Invalid filter: {exc}") from None
    return text


def _ACCEPTED(_: object) -> Response:
    return empty_response(202)


def _DONE(_: object) -> Response:
    return empty_response(204)


def _OK(_: object) -> Response:
    return empty_response(200)


def _FOUND(exists: bool) -> Response:
    return empty_response(200 if exists else 404)


def _added_or_missing(connection_id: str) -> Callable[[bool], Response]:
    def respond(found: bool) -> Response:
        if found:
            return empty_response(200)
        return error_response(404, "NotFound", f"Connection '{connection_id}' does not exist.")
    return respond


def _group(group: str) -> None:
    if not is_valid_group(group):
        raise BadRequest(group_error(group))


def _permission_target(request: Request, permission: str) -> str | None:
    if permission not in Permission.ALL:
        raise BadRequest(f"Unknown permission '{permission}': use sendToGroup or joinLeaveGroup.")
    target = request.query_one("targetName")
    if target is not None:
        _group(target)
    return target or None


def _int_param(request: Request, name: str, low: int, high: int, default: int | None) -> int | None:
    raw = request.query_one_ci(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer, not '{raw}'.") from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be from {low} to {high}, not {value}.")
    return value


def _decode_continuation(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"Invalid continuationToken '{token}'.") from None


def _next_link(request: Request, last_id: str, page_size: int, top: int | None) -> str:
    token = base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")
    query = f"continuationToken={quote(token)}&maxpagesize={page_size}"
    if top is not None:
        query += f"&top={top}"
    query += f"&api-version={quote(request.query_one('api-version') or '2024-12-01')}"
    return f"{request.raw_path}?{query}"
