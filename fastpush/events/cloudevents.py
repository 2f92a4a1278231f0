"""CloudEvents HTTP binary mode as Azure Web PubSub sends it (the common headers, connect,
connected, disconnected, user events and invocations; docs/protocol.md, "Event handlers"), without
I/O: headers and bodies for each event, and the meaning of each response."""
from __future__ import annotations

import datetime
import hashlib
import hmac

import msgspec

from ..protocol.names import group_error, is_valid_group, is_valid_user, user_error
from ..protocol.payload import DataType, Payload, PayloadError, decode_json
from .model import ConnectRequest, ConnectResult, EventContext, EventFailed, EventRejected, EventReply, InvocationFailed

__all__ = ["signature", "system_event", "user_event", "connect_result", "user_event_reply", "validation_headers",
           "invocation", "invocation_reply", "invocation_error", "MAX_ERROR_MESSAGE_CHARS"]

_json = msgspec.json.Encoder().encode
_SYSTEM_CONTENT_TYPE = "application/json; charset=utf-8"
_USER_CONTENT_TYPES = {
    DataType.TEXT: "text/plain; charset=utf-8",
    DataType.JSON: "application/json; charset=utf-8",
    DataType.BINARY: "application/octet-stream",
    DataType.PROTOBUF: "application/x-protobuf",
}
_REPLY_TYPES = {"text/plain": DataType.TEXT, "application/json": DataType.JSON,
                "application/octet-stream": DataType.BINARY}
# A handler's refusal of an invocation, by status, as the client's error name (other 4xx: BadRequest).
_REFUSALS = {401: "Forbidden", 403: "Forbidden", 404: "NotFound"}
MAX_ERROR_MESSAGE_CHARS = 1024  # of a handler's refusal text passed on to the client


def signature(keys: list[str], connection_id: str) -> str:
    """`sha256=<hex>` per access key (primary, secondary), joined with commas."""
    return ",".join("sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest() for k in keys)


def validation_headers(origin: str) -> dict[str, str]:
    return {"WebHook-Request-Origin": origin, "ce-awpsversion": "1.0"}


def _headers(ctx: EventContext, ce_type: str, event_name: str, content_type: str, keys: list[str],
             origin: str) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": ce_type,
        "ce-source": f"/hubs/{ctx.hub}/client/{ctx.connection_id}",
        "ce-id": ctx.event_id(),
        "ce-time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "ce-hub": ctx.hub,
        "ce-connectionId": ctx.connection_id,
        "ce-eventName": event_name,
        "ce-signature": signature(keys, ctx.connection_id),
        "WebHook-Request-Origin": origin,
    }
    if ctx.user_id is not None:
        headers["ce-userId"] = ctx.user_id
    if ctx.subprotocol:
        headers["ce-subprotocol"] = ctx.subprotocol
    if ctx.state is not None:
        headers["ce-connectionState"] = ctx.state
    return headers


def system_event(ctx: EventContext, name: str, keys: list[str], origin: str, *,
                 connect: ConnectRequest | None = None, reason: str | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and JSON body of a `connect`, `connected` or `disconnected` event."""
    if name == "connect":
        assert connect is not None
        body = {"claims": connect.claims, "query": connect.query, "headers": connect.headers,
                "subprotocols": connect.subprotocols, "clientCertificates": connect.client_certificates}
    elif name == "disconnected":
        body = {"reason": reason or ""}
    else:
        body = {}
    return _headers(ctx, f"azure.webpubsub.sys.{name}", name, _SYSTEM_CONTENT_TYPE, keys, origin), _json(body)


def user_event(ctx: EventContext, name: str, payload: Payload, keys: list[str],
               origin: str) -> tuple[dict[str, str], bytes]:
    content_type = _USER_CONTENT_TYPES[payload.data_type]
    return _headers(ctx, f"azure.webpubsub.user.{name}", name, content_type, keys, origin), payload.data


def invocation(ctx: EventContext, name: str, payload: Payload | None, invocation_id: str, keys: list[str],
               origin: str) -> tuple[dict[str, str], bytes]:
    """An invocation reaches the handler as the user event of its name (so a handler written for
    events, such as @azure/web-pubsub-express's handleUserEvent, answers it unchanged), with
    `ce-invocationId` added; no data is an empty binary body."""
    headers, body = user_event(ctx, name, payload or Payload(DataType.BINARY, b""), keys, origin)
    headers["ce-invocationId"] = invocation_id
    return headers, body


def invocation_error(status: int, detail: str, name: str) -> InvocationFailed:
    """A handler's refusal as the client sees it. A 4xx passes the handler's text on (what
    express's `res.fail(400, detail)` means for the caller); a 5xx or any other status is an
    InternalServerError with a fixed message: the handler's internals are not the client's business."""
    if 400 <= status < 500:
        message = detail.strip()[:MAX_ERROR_MESSAGE_CHARS]
        return InvocationFailed(_REFUSALS.get(status, "BadRequest"),
                                message or f"The event handler for '{name}' refused the invocation ({status}).")
    return InvocationFailed("InternalServerError", f"The event handler for '{name}' failed ({status}).")


def invocation_reply(status: int, headers: dict[str, str], body: bytes, name: str) -> EventReply:
    """2xx: the answer, read as a user event's (user_event_reply); else the refusal (invocation_error)."""
    if not 200 <= status < 300:
        raise invocation_error(status, body[:4 * MAX_ERROR_MESSAGE_CHARS].decode(errors="replace"), name)
    return user_event_reply(status, headers, body)


class _ConnectBody(msgspec.Struct):
    userId: str | None = None
    groups: list[str] | None = None
    roles: list[str] | None = None
    subprotocol: str | None = None


def connect_result(status: int, headers: dict[str, str], body: bytes) -> ConnectResult:
    """A 2xx accepts (200 may set userId, groups, roles, subprotocol); anything else rejects."""
    if not 200 <= status < 300:
        message = body[:512].decode(errors="replace")
        raise EventRejected(status if 400 <= status < 600 else 500, message)
    state = headers.get("ce-connectionstate")
    if status == 204 or not body.strip():
        return ConnectResult(state=state)
    try:
        parsed = msgspec.convert(decode_json(body), _ConnectBody)
    except (PayloadError, msgspec.ValidationError) as exc:
        raise EventRejected(500, f"The connect handler answered invalid JSON: {exc}") from None
    if parsed.userId is not None and not is_valid_user(parsed.userId):
        raise EventRejected(500, "The connect handler answered " + user_error(parsed.userId))
    for group in parsed.groups or ():
        if not is_valid_group(group):
            raise EventRejected(500, "The connect handler answered " + group_error(group))
    return ConnectResult(parsed.userId, parsed.groups, parsed.roles, parsed.subprotocol or None, state)


def user_event_reply(status: int, headers: dict[str, str], body: bytes) -> EventReply:
    """2xx with a body is sent back to the client, typed by Content-Type (none: binary)."""
    if not 200 <= status < 300:
        raise EventFailed(f"The event handler answered {status}: {body[:200].decode(errors='replace')}")
    state = headers.get("ce-connectionstate")
    if status == 204 or not body:
        return EventReply(None, state)
    media = headers.get("content-type", "application/octet-stream").split(";", 1)[0].strip().lower()
    data_type = _REPLY_TYPES.get(media, DataType.BINARY)
    if data_type is not DataType.BINARY:
        try:
            body.decode()
        except UnicodeDecodeError:
            raise EventFailed(f"The event handler answered {media} that is not valid UTF-8") from None
    if data_type is DataType.JSON:
        try:
            decode_json(body)
        except PayloadError:
            data_type = DataType.TEXT  # labelled JSON but not JSON (or too deep): still deliver it, as text
    return EventReply(Payload(data_type, body), state)
