"""The composition root: one Node, its REST API and front door on one port, and clean shutdown."""
from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time

from picows import WSListener, WSTransport

from .auth.tokens import KeyRing, generate_access_key
from .client_connection import ClientConnection, ConnectionSettings
from .embedding import HubApi
from .broker.errors import BrokerUnavailable
from .broker.memory import MemoryBroker
from .broker.redis import RedisBroker
from .config import Config
from .events.dispatcher import HubEvents
from .events.http_client import HttpClient
from .events.model import ConnectRequest, EventContext, EventRejected, HandlerRule
from .events.upstream import HttpUpstream
from .handshake import Accept, Reject, decide_upgrade, variant_of
from .http.front_door import FrontDoor, Handoff
from .http.messages import Request, Response, error_response
from .http.rest import MAX_BODY_BYTES, RestApi
from .hub import close
from .hub import Hub
from .node import Node
from .protocol.close_codes import CloseCode

__all__ = ["Server"]

log = logging.getLogger("fastpush")

MAX_FRAME_BYTES = 1024 * 1024
IDLE_HTTP_SECONDS = 120.0
SHUTDOWN_GRACE_SECONDS = 2.0


class Server:
    """A fastpush server: `await start()`, use it, `await stop()` (or `async with`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, access_key: str | None = None,
                 secondary_key: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 max_frame_bytes: int = MAX_FRAME_BYTES, max_body_bytes: int = MAX_BODY_BYTES,
                 public_host: str | None = None, recovery_window_seconds: float = 30.0,
                 replay_max_messages: int = 1000, replay_max_bytes: int = 16 * 1024 * 1024,
                 max_outbound_bytes: int = 4 * 1024 * 1024, keepalive_seconds: float = 20.0,
                 idle_timeout_seconds: float = 60.0, config: Config | None = None, redis_url: str | None = None,
                 reuse_port: bool = False):
        self.host = host
        self.port = port
        self.keyring = KeyRing(access_key or generate_access_key(), secondary_key)
        self.ssl_context = ssl_context
        self.max_frame_bytes = max_frame_bytes
        self.max_body_bytes = max_body_bytes
        self.public_host = public_host
        self.settings = ConnectionSettings(recovery_window_seconds, max_outbound_bytes,
                                           replay_max_messages=replay_max_messages, replay_max_bytes=replay_max_bytes)
        self.config = config or Config()
        self._upstream_client: HttpClient | None = None
        self.reuse_port = reuse_port
        broker = RedisBroker(redis_url) if redis_url else MemoryBroker()
        self.node = Node(self._configure_hub, broker)
        self.rest = RestApi(self.node, self.keyring)
        self.front_doors: set[FrontDoor] = set()
        self._server: asyncio.AbstractServer | None = None
        self.keepalive_seconds = keepalive_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> "Server":
        loop = asyncio.get_running_loop()
        secure = self.ssl_context is not None
        await self.node.broker.start(self.node)
        self._server = await loop.create_server(lambda: FrontDoor(self, secure), self.host, self.port,
                                                ssl=self.ssl_context, reuse_address=True, backlog=4096,
                                                reuse_port=self.reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [loop.create_task(self._sweep_idle_http()), loop.create_task(self._heartbeat())]
        log.info("fastpush listening on %s", self.endpoint)
        return self

    async def stop(self) -> None:
        """Close every WebSocket with a close frame, then every HTTP connection, then the socket."""
        if self._server is None:
            return
        self._server.close()
        for task in self._tasks:
            task.cancel()
        conns = [c for hub in self.node.hubs() for c in hub.tables.connections.values()]
        for conn in conns:
            close(conn, CloseCode.GOING_AWAY, "The server is shutting down.")
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self.node.connection_count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in conns:
            if conn.transport is not None and not conn.transport.is_disconnected:
                conn.transport.disconnect(False)
        for hub in self.node.hubs():
            if hub.events is not None:
                await hub.events.drain(SHUTDOWN_GRACE_SECONDS)
        if self._upstream_client is not None:
            await self._upstream_client.close()
        await self.node.broker.stop()
        for door in list(self.front_doors):
            door.close_idle()
        await asyncio.sleep(0)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "Server":
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def _sweep_idle_http(self) -> None:
        while True:
            await asyncio.sleep(IDLE_HTTP_SECONDS / 4)
            cutoff = time.monotonic() - IDLE_HTTP_SECONDS
            for door in [d for d in self.front_doors if d.last_active < cutoff]:
                door.close_idle()

    def hub(self, name: str) -> HubApi:
        """The embedding API for one hub: the Python server SDK's methods, without HTTP."""
        return HubApi(self.node.hub(name))

    def client_access_url(self, hub: str, *, user_id: str | None = None, roles: tuple[str, ...] = (),
                          groups: tuple[str, ...] = (), minutes_to_expire: int = 60) -> str:
        """A ws(s):// URL with a signed access token, as `get_client_access_token()['url']` gives."""
        token = self.keyring.issue_client(self.endpoint, hub, user_id=user_id, roles=roles, groups=groups,
                                          minutes_to_expire=minutes_to_expire)
        return "ws" + self.endpoint[4:] + f"/client/hubs/{hub}?access_token={token}"

    async def _heartbeat(self) -> None:
        """One sweep for all connections (no task or timer per connection): ping the quiet ones,
        drop the ones silent for longer than the idle timeout (a peer gone without a FIN)."""
        while True:
            await asyncio.sleep(self.keepalive_seconds)
            now = time.monotonic()
            for hub in self.node.hubs():
                for conn in tuple(hub.tables.connections.values()):
                    transport = conn.transport
                    if transport is None or transport.is_disconnected:
                        continue
                    quiet = now - conn.last_seen
                    if quiet > self.idle_timeout_seconds:
                        log.info("connection %s silent for %.0f s: dropping it", conn.connection_id, quiet)
                        transport.disconnect(False)
                    elif quiet >= self.keepalive_seconds:
                        transport.send_ping()

    # --- what clients are told --------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = self.public_host or (self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.keyring.primary};Version=1.0;"

    # --- the front door's gate ----------------------------------------------------------------
    def handle_rest(self, request: Request) -> Response:
        return self.rest.handle(request)

    def decide_upgrade(self, request: Request):
        """A Handoff or an HTTP refusal; a coroutine giving one when a connect event must be asked."""
        decision = decide_upgrade(request, self.keyring, lambda name: self.node.hub(name).anonymous_allowed)
        if isinstance(decision, Reject):
            return error_response(decision.status, _ERROR_CODES.get(decision.status, "Error"), decision.message)
        hub = self.node.hub(decision.hub)
        if decision.recovery_of is not None:
            conn = hub.connection(decision.recovery_of)
            if isinstance(conn, ClientConnection):
                refusal = conn.recovery_refusal(decision.recovery_token, decision.subprotocol)
                if refusal is None:
                    return Handoff(conn, decision.subprotocol)
                return Handoff(_RefusedRecovery(refusal), decision.subprotocol)
            taken = hub.broker.take_session(hub, decision.recovery_of, decision.recovery_token, decision.subprotocol)
            if taken is not None:
                return self._recover_elsewhere(hub, decision, taken)
            return Handoff(_RefusedRecovery("The session to recover was not found."), decision.subprotocol)
        connection_id = _new_connection_id()
        if hub.events is not None and hub.events.wants_connect:
            return self._admit(hub, decision, connection_id, request)
        prepared = hub.broker.prepare_connection(hub, decision.claims.user_id, decision.claims.groups)
        if prepared is not None:
            return self._admit(hub, decision, connection_id, request, prepared)
        return Handoff(ClientConnection(hub, decision, connection_id, self.settings), decision.subprotocol)

    async def _admit(self, hub: Hub, decision: Accept, connection_id: str, request: Request,
                     prepared=None) -> Handoff | Response:
        """The asynchronous part of an upgrade: the blocking `connect` event (which may refuse, or
        set userId, groups, roles, subprotocol), then the broker's preparation for the client."""
        ctx = None
        if prepared is None:
            ctx = EventContext(hub.name, connection_id, decision.claims.user_id, decision.subprotocol)
            refused = await self._ask_connect(hub, decision, ctx, request)
            if refused is not None:
                return refused
            prepared = hub.broker.prepare_connection(hub, decision.claims.user_id, decision.claims.groups)
        if prepared is not None:
            try:
                user_groups = await prepared
            except BrokerUnavailable as exc:
                return error_response(503, "ServiceUnavailable", str(exc))
            decision.claims.groups = (*decision.claims.groups, *user_groups)
        return Handoff(ClientConnection(hub, decision, connection_id, self.settings, ctx), decision.subprotocol)

    async def _recover_elsewhere(self, hub: Hub, decision: Accept, taken) -> Handoff | Response:
        """The session is on another node: take it over, subscribed before the client resumes."""
        try:
            state = await taken
            if state is None:
                return Handoff(_RefusedRecovery("The session to recover was not found, or its token did not match."),
                               decision.subprotocol)
            conn = ClientConnection.adopt(hub, self.settings, state)
            prepared = hub.broker.prepare_connection(hub, conn.user_id, conn.groups_to_join)
            if prepared is not None:
                await prepared
        except BrokerUnavailable as exc:
            return error_response(503, "ServiceUnavailable", str(exc))
        return Handoff(conn, decision.subprotocol)

    async def _ask_connect(self, hub: Hub, decision: Accept, ctx: EventContext, request: Request) -> Response | None:
        try:
            result = await hub.events.connect(ctx, _connect_request(request, decision))
        except EventRejected as exc:
            return error_response(exc.status, _ERROR_CODES.get(exc.status, "ConnectRejected"),
                                  exc.message or "The connect event handler refused the connection.")
        if result is not None:
            claims = decision.claims
            if result.user_id is not None:
                claims.user_id = ctx.user_id = result.user_id
            if result.roles is not None:
                claims.roles = tuple(result.roles)
            if result.groups:
                claims.groups = tuple(result.groups)
            if result.subprotocol and result.subprotocol in decision.offered:
                decision.subprotocol = ctx.subprotocol = result.subprotocol
                decision.variant = variant_of(result.subprotocol)
            if result.state is not None:
                ctx.state = result.state
        return None

    def _configure_hub(self, hub: Hub) -> None:
        """Apply the config file's settings for this hub (matched case-insensitively)."""
        settings = next((s for name, s in self.config.hubs.items() if name.lower() == hub.name.lower()), None)
        if settings is None:
            return
        hub.anonymous_allowed = settings.anonymous_connect_policy.lower() == "allow"
        if settings.event_handlers and hub.events is None:
            hub.events = HubEvents()
        for handler in settings.event_handlers:
            upstream = HttpUpstream(handler.url_template, self._upstream(), self._access_keys, self._origin(),
                                    self.config.upstream_timeout_seconds)
            hub.events.add(HandlerRule(handler.user_event_pattern, tuple(handler.system_events)), upstream)

    def _upstream(self) -> HttpClient:
        if self._upstream_client is None:
            self._upstream_client = HttpClient()
        return self._upstream_client

    def _access_keys(self) -> list[str]:
        return [k for k in (self.keyring.primary, self.keyring.secondary) if k]

    def _origin(self) -> str:
        """WebHook-Request-Origin: the bare host of the public endpoint (what the middlewares compare)."""
        return self.endpoint.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")


_ERROR_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
_HIDDEN_QUERY = ("access_token", "awps_connection_id", "awps_reconnection_token")
_HIDDEN_HEADERS = ("authorization", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions")


def _connect_request(request: Request, decision: Accept) -> ConnectRequest:
    """What the connect event tells the handler; the access token itself is left out."""
    claims: dict[str, list[str]] = {}
    for name, value in decision.claims.claims.items():
        values = value if isinstance(value, list) else [value]
        claims[name] = [v if isinstance(v, str) else str(v) for v in values]
    query = {k: v for k, v in request.query.items() if k not in _HIDDEN_QUERY}
    headers = {k: [v] for k, v in request.headers.items() if k not in _HIDDEN_HEADERS}
    return ConnectRequest(claims, query, headers, list(decision.offered))


def _new_connection_id() -> str:
    return secrets.token_urlsafe(16)


class _RefusedRecovery(WSListener):
    """A reliable client asking for a session fastpush cannot resume: upgrade, then close 1008
    with the reason, which tells the SDKs to stop recovering and connect afresh."""

    def __init__(self, reason: str):
        self.reason = reason

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send_close(CloseCode.POLICY_VIOLATION, self.reason.encode()[:123])
        asyncio.get_running_loop().call_later(2.0, transport.disconnect)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == 0x8:
            transport.disconnect()
