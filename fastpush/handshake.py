"""Decide a WebSocket upgrade: which hub, which subprotocol, who the client is, or why not.

Runs before picows sees the connection, so a refusal is a plain HTTP status the SDKs understand.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from .auth.tokens import ClientClaims, KeyRing, TokenError
from .http.messages import Request, Response, error_response
from .protocol.json_protocol import (
    JSON_RELIABLE_V1,
    JSON_V1,
    PROTOBUF_RELIABLE_V1,
    PROTOBUF_V1,
)
from .protocol.names import UNSERVED_CLIENTS, group_error, hub_error, is_valid_group, is_valid_hub
from .protocol.variants import Variant

__all__ = ["Accept", "Reject", "client_hub", "decide_upgrade", "offered_subprotocols", "upgrade_refusal", "variant_of"]

# Looked up with the chosen subprotocol, None for a raw client (which gets Variant.RAW).
_VARIANTS: dict[str | None, Variant] = {JSON_V1: Variant.JSON, JSON_RELIABLE_V1: Variant.JSON_RELIABLE,
                                        PROTOBUF_V1: Variant.PROTOBUF, PROTOBUF_RELIABLE_V1: Variant.PROTOBUF_RELIABLE}


@dataclass(slots=True)
class Accept:
    hub: str
    subprotocol: str | None
    variant: int
    claims: ClientClaims
    raw_send_group: str | None = None  # webpubsub_mode=sendToGroup: every raw frame goes to this group
    raw_no_echo: bool = False
    recovery_of: str | None = None  # awps_connection_id of a reliable session the client asks back
    recovery_token: str | None = None  # awps_reconnection_token proving it may
    offered: tuple[str, ...] = ()  # every subprotocol the client offered (a connect handler may pick one)
    repeat_acks: bool = False  # the Python client SDK, whose ack wait can miss a fast ack (docs/protocol.md, Acks)
    address: str = ""  # the client's IP address, for the connection's log lines


_ERROR_CODES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 426: "UpgradeRequired"}
NOT_AN_UPGRADE = "Expected a WebSocket upgrade request (GET with Connection: Upgrade and Upgrade: websocket)."


@dataclass(slots=True)
class Reject:
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> Response:
        return error_response(self.status, _ERROR_CODES.get(self.status, "Error"), self.message, self.headers)


def client_hub(request: Request) -> str | None:
    """The hub named by `/client/hubs/{hub}` or `/client/?hub={hub}`; None for other paths."""
    path = request.raw_path
    if path.startswith("/client/hubs/"):
        hub = unquote(path[len("/client/hubs/"):]).rstrip("/")
        return hub if "/" not in hub else None
    if path in ("/client", "/client/"):
        return request.query_one("hub") or ""
    return None


def variant_of(subprotocol: str | None) -> Variant:
    return _VARIANTS.get(subprotocol, Variant.RAW)


def offered_subprotocols(request: Request) -> tuple[str, ...]:
    header = request.headers.get("sec-websocket-protocol") or ""
    return tuple(p.strip() for p in header.split(",") if p.strip())


def upgrade_refusal(request: Request) -> Reject | None:
    """Why a /client request cannot be accepted, judged from its path and headers alone (RFC 6455
    §4.2.1): decided before any token is checked, hub touched or connect event fired."""
    hub = client_hub(request)
    if hub is None:
        kind = request.raw_path.split("/")[2].lower() if request.raw_path.startswith("/clients/") else ""
        if kind in UNSERVED_CLIENTS:
            return Reject(404, f"{UNSERVED_CLIENTS[kind]} are not supported by fastpush; Web PubSub clients "
                               "connect to /client/hubs/{hub}.")
        return Reject(404, f"No WebSocket endpoint at '{request.raw_path}'.")
    if not is_valid_hub(hub):
        return Reject(400, hub_error(hub))
    headers = request.headers
    if (request.method != "GET" or "websocket" not in _tokens(headers.get("upgrade"))
            or "upgrade" not in _tokens(headers.get("connection"))):
        return Reject(400, NOT_AN_UPGRADE)
    if headers.get("sec-websocket-version") != "13":
        return Reject(426, "Only WebSocket version 13 is supported.",
                      (("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")))
    if not _valid_key(headers.get("sec-websocket-key")):
        return Reject(400, "Sec-WebSocket-Key must be the base64 encoding of 16 bytes.")
    return None


def decide_upgrade(request: Request, keyring: KeyRing, anonymous_allowed: Callable[[str], bool]) -> Accept | Reject:
    """Who the client is, or why not. `anonymous_allowed` must not make anything: it is asked
    before the client has proven anything."""
    refusal = upgrade_refusal(request)
    if refusal is not None:
        return refusal
    hub = client_hub(request) or ""  # never empty here: upgrade_refusal refuses a path naming no valid hub
    subprotocol = _choose_subprotocol(request.headers.get("sec-websocket-protocol"))
    variant = _VARIANTS.get(subprotocol, Variant.RAW)
    recovery_of = request.query_one("awps_connection_id")
    if recovery_of is not None:
        # Recovery needs no access token (it may have expired meanwhile): the reconnection token
        # is checked against the session instead.
        return Accept(hub, subprotocol, variant, ClientClaims(None), recovery_of=recovery_of,
                      recovery_token=request.query_one("awps_reconnection_token"), repeat_acks=_python_sdk(request),
                      address=request.peer)
    token = request.query_one("access_token") or _bearer(request.headers.get("authorization"))
    if not token and anonymous_allowed(hub):
        claims = ClientClaims(None)
    else:
        try:
            claims = keyring.verify_client(token or "", hub)
        except TokenError as exc:
            return Reject(401, str(exc))
    for group in claims.groups:
        if not is_valid_group(group):
            return Reject(400, "webpubsub.group claim: " + group_error(group))
    accept = Accept(hub, subprotocol, variant, claims, offered=offered_subprotocols(request),
                    repeat_acks=_python_sdk(request), address=request.peer)
    if accept.variant == Variant.RAW:
        mode = (request.query_one("webpubsub_mode") or "sendEvent").lower()
        if mode == "sendtogroup":
            send_group = request.query_one("group")
            if send_group is None or not is_valid_group(send_group):
                return Reject(400, "webpubsub_mode=sendToGroup needs one valid 'group' query parameter.")
            accept.raw_send_group = send_group
            accept.raw_no_echo = (request.query_one("noEcho") or "").lower() == "true"
        elif mode != "sendevent":
            return Reject(400, f"Unknown webpubsub_mode '{mode}': use sendEvent or sendToGroup.")
    return accept


def _tokens(header: str | None) -> list[str]:
    """The comma-separated tokens of a header (`Connection: keep-alive, Upgrade`), lower-cased."""
    return [t.strip().lower() for t in header.split(",")] if header else []


def _valid_key(key: str | None) -> bool:
    if not key or len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def _python_sdk(request: Request) -> bool:
    return request.headers.get("user-agent", "").startswith("azsdk-python-webpubsub-client/")


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def _choose_subprotocol(header: str | None) -> str | None:
    """The first offered subprotocol fastpush speaks; an unknown one means a raw client."""
    if not header:
        return None
    for offered in header.split(","):
        if offered.strip() in _VARIANTS:
            return offered.strip()
    return None
