"""The dashboard's HTTP side, under /dashboard on the public port: login, the page and its files,
its JSON data and actions, and the Live Trace WebSocket (/dashboard/trace).

Only the login URL answers without a session cookie; everything else is 401 without one (429
while the caller's address has failed too often). Requests that change something (POST) and the
trace's upgrade must also come from the dashboard's own origin (the `Origin` header), which a
page on another site cannot fake; the SameSite=Strict cookie is not sent by such pages anyway.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import msgspec
from picows import WSCloseCode

from ..auth.tokens import KeyRing, TokenError, path_segments
from ..broker.errors import BrokerUnavailable
from ..http.front_door import Handoff
from ..http.messages import Request, Response, error_response, json_response
from ..node import Node
from ..outcome import Outcome, then
from ..trace import Trace
from . import actions, views
from .access import LOGIN_TOKEN_SECONDS, MAX_LOGIN_TOKENS, MAX_SESSIONS, SESSION_SECONDS, FailureLimiter, Secrets
from .overview import SAMPLE_SECONDS, Overview
from .static_files import StaticFiles
from .watcher import TraceWatcher

__all__ = ["DASHBOARD_PATH", "MAX_WATCHERS", "Dashboard", "is_dashboard_path"]

log = logging.getLogger("fastpush.dashboard")

DASHBOARD_PATH: Final = "/dashboard"
MAX_WATCHERS: Final = 8  # Live Trace sockets open at once
_S = TypeVar("_S")

_COMMON_HEADERS: Final = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                          ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"))
_PAGE_POLICY: Final = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
                       "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
# Each page names an empty icon: else a browser asks for /favicon.ico, a 404 in its console.
_LOGGED_OUT_PAGE: Final = (b'<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">'
                           b'<title>fastpush</title><p>Log in to the dashboard '
                           b'with the URL fastpush printed when it started, or run <code>fastpush dashboard</code> for '
                           b'a new one.')
_LOGIN_PAGE: Final = (b'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=/dashboard/">'
                      b'<link rel="icon" href="data:,"><title>fastpush</title>'
                      b'<a href="/dashboard/">Open the dashboard</a>')


def is_dashboard_path(path: str) -> bool:
    return path == DASHBOARD_PATH or path.startswith(DASHBOARD_PATH + "/")


class Dashboard:
    """One server's dashboard. `endpoint` is the server's public URL (known once it listens)."""

    def __init__(self, node: Node, keyring: KeyRing, trace: Trace, endpoint: Callable[[], str],
                 collect: Callable[[], Any], *, enabled: bool = True) -> None:
        self.node = node
        self.keyring = keyring
        self.trace = trace
        self.endpoint = endpoint
        self.enabled = enabled  # False: every dashboard path is 404 (e.g. in --workers processes)
        self.login_tokens = Secrets(MAX_LOGIN_TOKENS, LOGIN_TOKEN_SECONDS)
        self.sessions = Secrets(MAX_SESSIONS, SESSION_SECONDS)
        self.limiter = FailureLimiter()
        self.overview = Overview(collect)
        self.watchers: set[TraceWatcher] = set()
        self._files = StaticFiles()
        self._ticker: asyncio.Task[None] | None = None

    # --- lifecycle and login URLs -------------------------------------------------------------
    def start(self) -> None:
        if self.enabled:
            self.overview.sample()
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for watcher in tuple(self.watchers):
            watcher.close(WSCloseCode.GOING_AWAY, "The server is shutting down.")

    def login_url(self, lifetime: float | None = None) -> str:
        """A new one-time login URL (valid LOGIN_TOKEN_SECONDS unless told otherwise)."""
        return f"{self.endpoint()}{DASHBOARD_PATH}/login?token={self.login_tokens.new(lifetime)}"

    @property
    def secure(self) -> bool:
        """The cookie is Secure when browsers reach the server over https (its own TLS, or a proxy's)."""
        return self.endpoint().startswith("https:")

    @property
    def cookie_name(self) -> str:
        """Browsers share cookies between the ports of one host: each server's has its port in its name."""
        port = urlsplit(self.endpoint()).port
        return f"fastpush_dashboard_{port}"

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self.overview.sample()
            for watcher in [w for w in self.watchers if not self.sessions.valid(w.session)]:
                watcher.close(WSCloseCode.POLICY_VIOLATION, "The dashboard session has ended.")

    # --- HTTP -----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Outcome[Response]:
        if not self.enabled:
            return error_response(404, "NotFound", "The dashboard is not served by this process.")
        path = request.raw_path
        if path == DASHBOARD_PATH:
            return _with_headers(Response(308, b"", None, (("Location", DASHBOARD_PATH + "/"),)))
        if path == DASHBOARD_PATH + "/login":
            return _with_headers(self._login(request))
        if path == DASHBOARD_PATH + "/login-url":
            return _with_headers(self._new_login_url(request))
        refusal = self._check_session(request)
        if refusal is not None:
            if path == DASHBOARD_PATH + "/" and refusal.status == 401:  # a browser: a page, not JSON
                refusal = Response(401, _LOGGED_OUT_PAGE, "text/html; charset=utf-8")
            return _with_headers(refusal)
        if request.method == "POST" and not self._same_origin(request):
            return _with_headers(error_response(403, "Forbidden", "Dashboard actions must come from the "
                                                "dashboard's own page (Origin)."))
        answer = self._route(request, path_segments(path)[1:])
        if isinstance(answer, Awaitable):
            return _guarded(answer)
        return _with_headers(answer)

    def _route(self, request: Request, segments: list[str]) -> Outcome[Response]:
        method = request.method
        match segments:
            case [""] if method in ("GET", "HEAD"):
                return self._file("index.html", page=True)
            case ["static", name] if method in ("GET", "HEAD"):
                return self._file(name)
            case ["api", "overview"] if method == "GET":
                return json_response(200, self.overview.history(_number(request, "since", 0.0, float)))
            case ["api", "hubs"] if method == "GET":
                return json_response(200, views.hub_list(self.node.hubs()))
            case ["api", "hubs", hub, "connections"] if method == "GET":
                return self._hub_page(request, hub, connections=True)
            case ["api", "hubs", hub, "groups"] if method == "GET":
                return self._hub_page(request, hub, connections=False)
            case ["api", "hubs", hub, "connections", connection_id, "close"] if method == "POST":
                body = _body(request, actions.CloseBody)
                return self._done(lambda: actions.close_connection(self.node, hub, connection_id, body()), 204)
            case ["api", "hubs", hub, "send"] if method == "POST":
                send_body = _body(request, actions.SendBody)
                return self._done(lambda: actions.send(self.node, hub, send_body()), 202)
            case ["api", "token"] if method == "POST":
                token_body = _body(request, actions.TokenBody)
                return self._done(lambda: actions.client_token(self.keyring, self.endpoint(), token_body()), 200)
            case ["api", "logout"] if method == "POST":
                return self._logout(request)
        return error_response(404, "NotFound", f"No dashboard resource '{request.method} {request.raw_path}'.")

    def _file(self, name: str, *, page: bool = False) -> Response:
        found = self._files.get(name)
        if found is None:
            return error_response(404, "NotFound", f"No dashboard file '{name[:100]}'.")
        body, content_type = found
        headers = (("Content-Security-Policy", _PAGE_POLICY),) if page else ()
        return Response(200, body, content_type, headers)

    def _hub_page(self, request: Request, name: str, *, connections: bool) -> Response:
        hub = self.node.find(name)
        offset = _number(request, "offset", 0, int)
        limit = _number(request, "limit", views.DEFAULT_PAGE, int)
        if offset < 0 or not 1 <= limit <= views.MAX_PAGE:
            return error_response(400, "BadRequest", f"offset must be 0 or more and limit 1 to {views.MAX_PAGE}.")
        if hub is None:
            empty: dict[str, object] = {"offset": offset, "total": 0, "connections" if connections else "groups": []}
            return json_response(200, empty)
        if connections:
            page = views.connection_page(hub, offset, limit, user=request.query_one("user") or None,
                                         group=request.query_one("group") or None)
        else:
            page = views.group_page(hub, offset, limit)
        return json_response(200, page)

    def _done(self, act: Callable[[], Outcome[Any]], status: int) -> Outcome[Response]:
        """Run an action; its result (a token) or an empty answer with `status`, a 400 for a refusal."""
        try:
            outcome = act()
        except (actions.ActionError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            return error_response(400, "BadRequest", str(exc))
        except BrokerUnavailable as exc:
            return error_response(503, "ServiceUnavailable", str(exc))
        return then(outcome, lambda result: json_response(status, result) if result is not None else Response(status))

    # --- access ---------------------------------------------------------------------------------
    def _login(self, request: Request) -> Response:
        token = request.query_one("token") or ""
        wait = self.limiter.refused_for(request.peer)
        if wait:
            return _too_many(wait)
        if request.method != "GET" or not self.login_tokens.take(token):
            self._failed(request, "a login token that is unknown, used or expired")
            return error_response(401, "Unauthorized", "This login URL is not valid: it was used already, it "
                                  "expired, or it is wrong. Run `fastpush dashboard` for a new one.")
        session = self.sessions.new()
        cookie = (f"{self.cookie_name}={session}; Path={DASHBOARD_PATH}; Max-Age={int(self.sessions.lifetime)}; "
                  f"HttpOnly; SameSite=Strict" + ("; Secure" if self.secure else ""))
        log.info("dashboard login from %s", request.peer, extra={"event": "dashboard_login", "address": request.peer})
        return Response(200, _LOGIN_PAGE, "text/html; charset=utf-8",
                        (("Set-Cookie", cookie), ("Content-Security-Policy", _PAGE_POLICY)))

    def _new_login_url(self, request: Request) -> Response:
        """`fastpush dashboard`: a login URL for whoever holds the access key (a REST-style token)."""
        wait = self.limiter.refused_for(request.peer)
        if wait:
            return _too_many(wait)
        auth = request.headers.get("authorization", "")
        try:
            if request.method != "POST" or auth[:7].lower() != "bearer ":
                raise TokenError("POST with 'Authorization: Bearer <token signed with the access key>'.")
            self.keyring.verify_rest(auth[7:].strip(), request.raw_target, self._origins(request))
        except TokenError as exc:
            self._failed(request, "a login URL asked for without a valid access token")
            return error_response(401, "Unauthorized", str(exc))
        return json_response(200, {"url": self.login_url()})

    def _check_session(self, request: Request) -> Response | None:
        """None for a caller with a live session; else its refusal (401, or 429 while limited)."""
        session = self._session_of(request)
        if session is not None and self.sessions.valid(session):
            return None
        if session is not None:
            wait = self.limiter.refused_for(request.peer)
            if wait:
                return _too_many(wait)
            self._failed(request, "a session cookie that is unknown or expired")
        return error_response(401, "Unauthorized", "Log in to the dashboard with the URL fastpush printed when it "
                              "started, or run `fastpush dashboard` for a new one.")

    def _session_of(self, request: Request) -> str | None:
        name = self.cookie_name
        for part in request.headers.get("cookie", "").split(";"):
            key, equals, value = part.strip().partition("=")
            if equals and key == name:
                return value
        return None

    def _logout(self, request: Request) -> Response:
        session = self._session_of(request)
        if session is not None:
            self.sessions.discard(session)
        expired = f"{self.cookie_name}=; Path={DASHBOARD_PATH}; Max-Age=0; HttpOnly; SameSite=Strict"
        return Response(204, b"", None, (("Set-Cookie", expired + ("; Secure" if self.secure else "")),))

    def _failed(self, request: Request, what: str) -> None:
        self.limiter.failed(request.peer)
        log.warning("dashboard: refused %s from %s", what, request.peer,
                    extra={"event": "dashboard_refused", "address": request.peer})

    def _same_origin(self, request: Request) -> bool:
        """The request's Origin names this server as the browser reached it (its Host), or the public endpoint."""
        origin = request.headers.get("origin")
        if not origin:
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        netloc = parts.netloc.lower()
        return netloc in (request.headers.get("host", "").lower(), urlsplit(self.endpoint()).netloc.lower())

    def _origins(self, request: Request) -> list[str]:
        origins = [self.endpoint()]
        host = request.headers.get("host")
        if host:
            origins.append(f"{'https' if request.secure else 'http'}://{host}")
        return origins

    # --- the Live Trace WebSocket ---------------------------------------------------------------
    def decide_upgrade(self, request: Request) -> Handoff | Response:
        if not self.enabled or request.raw_path != DASHBOARD_PATH + "/trace":
            return error_response(404, "NotFound", "No WebSocket here: the Live Trace is at /dashboard/trace.")
        refusal = self._check_session(request)
        if refusal is not None:
            return refusal
        if not self._same_origin(request):
            self._failed(request, "a Live Trace socket from another origin")
            return error_response(403, "Forbidden", "The Live Trace opens only from the dashboard's own page.")
        if len(self.watchers) >= MAX_WATCHERS:
            return error_response(503, "ServiceUnavailable", f"{MAX_WATCHERS} Live Trace watchers are open "
                                  "already, the most allowed.")
        session = self._session_of(request)
        assert session is not None  # _check_session passed
        return Handoff(TraceWatcher(self.trace, session, self.watchers, MAX_WATCHERS), None)


def _body(request: Request, kind: type[_S]) -> Callable[[], _S]:
    """The JSON body decoded as `kind`, when called (a bad one raises inside the action's guard)."""
    return lambda: msgspec.json.decode(request.body or b"{}", type=kind)


def _number(request: Request, name: str, default: _S, kind: Callable[[str], _S]) -> _S:
    text = request.query_one(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        return default
    return value if not isinstance(value, float) or math.isfinite(value) else default


def _too_many(wait: float) -> Response:
    return error_response(429, "TooManyRequests", "Too many failed dashboard logins: try again later.",
                          (("Retry-After", str(math.ceil(wait))),))


def _with_headers(response: Response) -> Response:
    response.headers = (*response.headers, *_COMMON_HEADERS)
    return response


async def _guarded(pending: Awaitable[Response]) -> Response:
    try:
        response = await pending
    except BrokerUnavailable as exc:
        response = error_response(503, "ServiceUnavailable", str(exc))
    return _with_headers(response)
