"""An application server reached over HTTP with CloudEvents (an Azure `eventHandlers` entry)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

from ..logs import RateLimitedLog, one_line
from ..metrics.counters import COUNTERS
from ..protocol.payload import Payload
from ..trace import Trace
from . import cloudevents
from .http_client import HttpBusy, HttpClient, HttpError, HttpTimeout, Response
from .model import (
    ConnectRequest,
    ConnectResult,
    EventBusy,
    EventContext,
    EventFailed,
    EventRejected,
    EventReply,
    EventTimedOut,
    InvocationFailed,
)

__all__ = ["HttpUpstream"]

log = logging.getLogger("fastpush.events")

VALIDATION_RETRY_SECONDS = 30.0


class HttpUpstream:
    """Posts events to `url_template` ({hub} and {event} filled in), after the abuse-protection
    handshake (OPTIONS with WebHook-Request-Origin) has succeeded for that URL. Every failed event
    is logged through `failures`, rate-limited: clients can cause them in bulk."""

    def __init__(self, url_template: str, client: HttpClient, keys: Callable[[], list[str]], origin: str,
                 timeout: float, failures: RateLimitedLog | None = None, trace: Trace | None = None):
        self.url_template = url_template
        self._client = client
        self._keys = keys
        self._origin = origin
        self._timeout = timeout
        self._validated: dict[str, asyncio.Future[bool]] = {}
        self._refused_at: dict[str, float] = {}
        self._failures = failures or RateLimitedLog(log, "upstream failures")
        self._trace = trace or Trace()  # the server's Live Trace (a private, never watched one if none)

    def _url(self, hub: str, event: str) -> str:
        """{hub} and {event} percent-encoded: a name can never add a path segment, a query or a fragment."""
        return self.url_template.replace("{hub}", quote(hub, safe="")).replace("{event}", quote(event, safe=""))

    async def connect(self, ctx: EventContext, request: ConnectRequest) -> ConnectResult:
        try:
            response = await self._post(ctx, "connect", *cloudevents.system_event(
                ctx, "connect", self._keys(), self._origin, connect=request))
        except EventBusy:
            raise EventRejected(503, "The connect event handler is busy (as many connect events are under way "
                                     "and waiting as the server allows); try again later.") from None
        except EventFailed as exc:
            status = 504 if "timed out" in str(exc) else 500
            raise EventRejected(status, f"The connect event handler failed: {exc}") from None
        return cloudevents.connect_result(response.status, response.headers, response.body)

    async def connected(self, ctx: EventContext) -> None:
        await self._notify(ctx, "connected", *cloudevents.system_event(ctx, "connected", self._keys(), self._origin))

    async def disconnected(self, ctx: EventContext, reason: str) -> None:
        await self._notify(ctx, "disconnected", *cloudevents.system_event(ctx, "disconnected", self._keys(),
                                                                           self._origin, reason=reason))

    async def group_presence(self, ctx: EventContext, name: str, group: str) -> None:
        await self._notify(ctx, name, *cloudevents.presence_event(ctx, name, group, self._keys(), self._origin))

    async def user_event(self, ctx: EventContext, name: str, payload: Payload) -> EventReply:
        response = await self._post(ctx, name, *cloudevents.user_event(ctx, name, payload, self._keys(), self._origin))
        try:
            return cloudevents.user_event_reply(response.status, response.headers, response.body)
        except EventFailed as exc:  # an error status, or a reply fastpush cannot pass on
            self._failed(ctx, name, str(exc))
            raise

    async def invoke(self, ctx: EventContext, name: str, payload: Payload | None, invocation_id: str) -> EventReply:
        """The user event of `name` with `ce-invocationId`; its answer, or the error the client gets
        (InvocationFailed). Cancelling the call abandons the request: its socket is closed."""
        headers, body = cloudevents.invocation(ctx, name, payload, invocation_id, self._keys(), self._origin)
        try:
            response = await self._post(ctx, name, headers, body)
        except EventTimedOut:
            raise InvocationFailed("Timeout", f"The event handler for '{name}' did not answer in time.") from None
        try:
            return cloudevents.invocation_reply(response.status, response.headers, response.body, name)
        except InvocationFailed as exc:  # a 4xx is the application's answer to its caller, not a failure
            if exc.name == "InternalServerError":
                self._failed(ctx, name, f"the event handler answered {response.status}")
            raise
        except EventFailed as exc:  # an answer fastpush cannot pass on
            self._failed(ctx, name, str(exc))
            raise

    async def _notify(self, ctx: EventContext, name: str, headers: dict[str, str], body: bytes) -> None:
        """Non-blocking events: the answer is only logged."""
        try:
            response = await self._post(ctx, name, headers, body)
        except EventFailed:
            return  # logged by _post
        if not 200 <= response.status < 300:
            self._failed(ctx, name, f"the event handler answered {response.status}")

    async def _post(self, ctx: EventContext, event: str, headers: dict[str, str], body: bytes) -> Response:
        """The event's HTTP exchange, counted and timed by its outcome (metrics)."""
        url = self._url(ctx.hub, event)
        started = time.perf_counter()
        failure: EventFailed
        try:
            await self._ensure_validated(self._url(ctx.hub, "validate"))
            response = await self._client.request("POST", url, headers, body, self._timeout)
        except HttpBusy as exc:
            outcome, failure = "busy", EventBusy(str(exc))
        except HttpError as exc:
            timed_out = isinstance(exc, HttpTimeout)
            outcome = "timeout" if timed_out else "unreachable"
            failure = EventTimedOut(str(exc)) if timed_out else EventFailed(str(exc))
        except EventFailed as exc:
            outcome, failure = "not_validated", exc
        else:
            COUNTERS.upstream_event(event, _status_outcome(response.status), time.perf_counter() - started)
            if self._trace.active:
                self._traced(ctx, event, url, body, started, status=response.status)
            return response
        COUNTERS.upstream_event(event, outcome, time.perf_counter() - started)
        if self._trace.active:
            self._traced(ctx, event, url, body, started, error=str(failure))
        self._failed(ctx, event, str(failure))
        raise failure

    def _traced(self, ctx: EventContext, event: str, url: str, body: bytes, started: float, *,
                status: int | None = None, error: str | None = None) -> None:
        """An upstream call in the Live Trace: the event, where it went, its size, how it ended."""
        fields: dict[str, object] = {"event": event, "hub": ctx.hub, "connection_id": ctx.connection_id,
                                     "target": url, "size": len(body),
                                     "durationMs": round((time.perf_counter() - started) * 1000, 3)}
        if status is not None:
            fields["status"] = status
        else:
            fields.update(outcome="failed", error=error)
        self._trace.tell("upstream", fields, body)

    def _failed(self, ctx: EventContext, event: str, error: str) -> None:
        fields = {"event": "upstream_failed", "hub": ctx.hub, "connection_id": ctx.connection_id,
                  "upstream_event": event, "url": self._url(ctx.hub, event), "error": one_line(error)}
        self._failures.log(logging.WARNING, "hub %(hub)s: %(upstream_event)s event for %(connection_id)s failed: "
                                            "%(error)s (%(url)s)", fields)

    async def _ensure_validated(self, url: str) -> None:
        refused = self._refused_at.get(url)
        if refused is not None and time.monotonic() - refused < VALIDATION_RETRY_SECONDS:
            raise EventFailed(f"the event handler {url} refused the abuse-protection validation")
        future = self._validated.get(url)
        if future is None:
            future = self._validated[url] = asyncio.ensure_future(self._validate(url))
        if not await asyncio.shield(future):
            self._validated.pop(url, None)
            self._refused_at[url] = time.monotonic()
            raise EventFailed(f"the event handler {url} refused the abuse-protection validation")

    async def _validate(self, url: str) -> bool:
        try:
            response = await self._client.request("OPTIONS", url, cloudevents.validation_headers(self._origin),
                                                  timeout=self._timeout)
        except HttpError as exc:
            log.error("event handler %s: abuse-protection validation failed: %s", url, exc)
            return False
        allowed = [v.strip() for v in response.headers.get("webhook-allowed-origin", "").split(",")]
        if 200 <= response.status < 300 and ("*" in allowed or self._origin in allowed):
            return True
        log.error("event handler %s refused abuse-protection validation (status %d, WebHook-Allowed-Origin %r); "
                  "its events are not sent", url, response.status, response.headers.get("webhook-allowed-origin"))
        return False


def _status_outcome(status: int) -> str:
    """An answer's outcome label: ok (2xx), status_4xx, status_5xx or status_other."""
    if 200 <= status < 300:
        return "ok"
    return f"status_{status // 100}xx" if 400 <= status < 600 else "status_other"
