"""Decide a WebSocket upgrade: which hub, which subprotocol, who the client is, or why not.

Runs before picows sees the connection, so a refusal is a plain HTTP status the SDKs understand.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from . import _fanout
from .auth.tokens import ClientClaims, KeyRing, TokenError
from .http.messages import Request
from .protocol.json_protocol import JSON_RELIABLE_V1, JSON_V1, PROTOBUF_RELIABLE_V1, PROTOBUF_V1
from .protocol.names import group_error, hub_error, is_valid_group, is_valid_hub

__all__ = ["Accept", "Reject", "decide_upgrade", "client_hub", "variant_of", "offered_subprotocols"]

_VARIANTS = {JSON_V1: _fanout.JSON, JSON_RELIABLE_V1: _fanout.JSON_RELIABLE,
             PROTOBUF_V1: _fanout.PROTOBUF, PROTOBUF_RELIABLE_V1: _fanout.PROTOBUF_RELIABLE}


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
    repeat_acks: bool = False  # the Python client SDK, whose ack wait can miss a fast ack (capture S12)


@dataclass(slots=True)
class Reject:
    status: int
    message: str


def client_hub(request: Request) -> str | None:
    """The hub named by `/client/hubs/{hub}` or `/client/?hub={hub}`; None for other paths."""
    path = request.raw_path
    if path.startswith("/client/hubs/"):
        hub = unquote(path[len("/client/hubs/"):]).rstrip("/")
        return hub if "/" not in hub else None
    if path in ("/client", "/client/"):
        return request.query_one("hub") or ""
    return None


def variant_of(subprotocol: str | None) -> int:
    return _VARIANTS.get(subprotocol, _fanout.RAW)


def offered_subprotocols(request: Request) -> tuple[str, ...]:
    header = request.headers.get("sec-websocket-protocol") or ""
    return tuple(p.strip() for p in header.split(",") if p.strip())


def decide_upgrade(request: Request, keyring: KeyRing, anonymous_allowed: Callable[[str], bool]) -> Accept | Reject:
    hub = client_hub(request)
    if hub is None:
        return Reject(404, f"No WebSocket endpoint at '{request.raw_path}'.")
    if not is_valid_hub(hub):
        return Reject(400, hub_error(hub))
    if request.headers.get("upgrade", "").lower() != "websocket":
        return Reject(400, "Expected a WebSocket upgrade request (Upgrade: websocket).")
    subprotocol = _choose_subprotocol(request.headers.get("sec-websocket-protocol"))
    variant = _VARIANTS.get(subprotocol, _fanout.RAW)
    recovery_of = request.query_one("awps_connection_id")
    if recovery_of is not None:
        # Recovery needs no access token (it may have expired meanwhile): the reconnection token
        # is checked against the session instead.
        return Accept(hub, subprotocol, variant, ClientClaims(None), recovery_of=recovery_of,
                      recovery_token=request.query_one("awps_reconnection_token"), repeat_acks=_python_sdk(request))
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
                    repeat_acks=_python_sdk(request))
    if accept.variant == _fanout.RAW:
        mode = (request.query_one("webpubsub_mode") or "sendEvent").lower()
        if mode == "sendtogroup":
            group = request.query_one("group")
            if group is None or not is_valid_group(group):
                return Reject(400, "webpubsub_mode=sendToGroup needs one valid 'group' query parameter.")
            accept.raw_send_group = group
            accept.raw_no_echo = (request.query_one("noEcho") or "").lower() == "true"
        elif mode != "sendevent":
            return Reject(400, f"Unknown webpubsub_mode '{mode}': use sendEvent or sendToGroup.")
    return accept


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
