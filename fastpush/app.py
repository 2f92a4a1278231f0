"""The composition root: one Node, its REST API and front door on one port, and clean shutdown."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from .auth.tokens import KeyRing, generate_access_key
from .broker.base import SessionReservation
from .broker.errors import BrokerUnavailable, SessionMoving
from .broker.memory import MemoryBroker
from .broker.redis import RedisBroker
from .client_connection import ClientConnection
from .config import Config, conflation_rules, ignored_settings, last_value_policy, presence_rule
from .dashboard.routes import Dashboard, is_dashboard_path
from .embedding import HubApi
from .events.dispatcher import HubEvents
from .events.http_client import HttpClient
from .events.model import ConnectRequest, ConnectResult, EventContext, EventRejected, HandlerRule
from .events.upstream import HttpUpstream
from .handshake import Accept, Reject, decide_upgrade, variant_of
from .heartbeat import Heartbeat
from .http.front_door import ConnectionLimits, FrontDoor, Handoff, default_max_connections
from .http.messages import Request, Response, error_response
from .http.rest import MAX_BODY_BYTES, RestApi
from .hub import Hub
from .lastvalue import LastValuePolicy, LastValues
from .logs import RateLimitedLog, one_line
from .metrics.collector import make_registry
from .metrics.counters import COUNTERS
from .metrics.endpoint import METRICS_PATH, MetricsEndpoint, MetricsGate
from .node import Node
from .outcome import Outcome, resolve, then
from .permissions import RoleError, check_roles
from .protocol.close_codes import CloseCode
from .protocol.names import group_error, is_valid_group, is_valid_user, user_error
from .session import ConnectionSettings
from .startup import format_address

__all__ = ["Server", "client_access_url"]

log = logging.getLogger("fastpush")
client_log = logging.getLogger("fastpush.ws")

MAX_MESSAGE_BYTES = 1024 * 1024  # Azure's limit on one client message
HTTP_SWEEP_SECONDS = 1.0  # how often HTTP deadlines are checked (more often when a timeout is shorter)
HUB_SWEEP_SECONDS = 30.0  # how often hubs emptied without a connection leaving are dropped
SHUTDOWN_GRACE_SECONDS = 2.0
DRAIN_TIMEOUT_SECONDS = 25.0  # default: with the shutdown's own grace, inside a 30 s stop timeout (Kubernetes')
DRAIN_CHECK_SECONDS = 0.1  # how often a draining server looks at what is left
DRAIN_REASON = "The server is restarting; connect again."
BROKER_LOSS_TIMEOUT_SECONDS = 5.0  # default: a node without Redis this long closes its clients
BROKER_CHECK_SECONDS = 0.25  # how often the broker's health is looked at
BROKER_LOST_REASON = "This node lost the cluster broker (Redis); connect again."


class Server:
    """A fastpush server: `await start()`, use it, `await stop()` (or `async with`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, access_key: str | None = None,
                 secondary_key: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, max_body_bytes: int = MAX_BODY_BYTES,
                 public_host: str | None = None, recovery_window_seconds: float = 30.0,
                 replay_max_messages: int = 1000, replay_max_bytes: int = 16 * 1024 * 1024,
                 max_outbound_bytes: int = 4 * 1024 * 1024, keepalive_seconds: float = 20.0,
                 idle_timeout_seconds: float = 60.0, config: Config | None = None, redis_url: str | None = None,
                 reuse_port: bool = False, max_groups_per_connection: int = 1000,
                 max_streams_per_connection: int = 64, max_stream_bytes: int = 64 * 1024 * 1024,
                 max_connections: int | None = None, max_connections_per_ip: int = 1000,
                 request_head_timeout_seconds: float = 60.0, request_body_timeout_seconds: float = 60.0,
                 http_keepalive_timeout_seconds: float = 75.0, max_upstream_connections: int = 64,
                 max_upstream_waiting: int = 256,
                 warn_ignored_settings: bool = True, dashboard: bool = True,
                 metrics_address: tuple[str, int] | None = None,
                 broker_loss_timeout_seconds: float = BROKER_LOSS_TIMEOUT_SECONDS):
        self.host = host
        self.broker_loss_timeout_seconds = broker_loss_timeout_seconds
        self.port = port
        self.keyring = KeyRing(access_key or generate_access_key(), secondary_key)
        self.ssl_context = ssl_context
        self.max_message_bytes = max_message_bytes
        self.max_groups_per_connection = max_groups_per_connection
        self.max_streams_per_connection = max_streams_per_connection
        self.max_stream_bytes = max_stream_bytes
        self.max_connections = max_connections  # None: derived from the open-file limit
        self.max_connections_per_ip = max_connections_per_ip
        self.request_head_timeout_seconds = request_head_timeout_seconds
        self.request_body_timeout_seconds = request_body_timeout_seconds
        self.http_keepalive_timeout_seconds = http_keepalive_timeout_seconds
        self.max_upstream_connections = max_upstream_connections
        self.max_upstream_waiting = max_upstream_waiting
        self.max_body_bytes = max_body_bytes
        self.public_host = public_host
        self.settings = ConnectionSettings(recovery_window_seconds, max_outbound_bytes,
                                           replay_max_messages=replay_max_messages, replay_max_bytes=replay_max_bytes,
                                           max_message_bytes=max_message_bytes,
                                           max_groups_per_connection=max_groups_per_connection,
                                           max_streams_per_connection=max_streams_per_connection,
                                           max_stream_bytes=max_stream_bytes)
        self.config = config or Config()
        self.warn_ignored_settings = warn_ignored_settings  # off in --workers' processes: their parent says it once
        self._upstream_client: HttpClient | None = None
        self.reuse_port = reuse_port
        # Each hub's lastValueGroups, compiled once (the Redis broker asks at every group send).
        self._last_value_policies = {name.lower(): policy for name, settings in self.config.hubs.items()
                                     if (policy := last_value_policy(settings)) is not None}
        broker = RedisBroker(redis_url, last_value_policy=self._last_value_policy) if redis_url else MemoryBroker()
        # Sessions moving onto this node, (hub in lower case, connection id) -> the move (_move_here).
        self._moving_in: dict[tuple[str, str], asyncio.Future[Handoff | Response]] = {}
        self.node = Node(broker, configure=self._configure_hub, sessions=_Sessions(self._moving_in))
        self.rest = RestApi(self.node, self.keyring, lambda: self.endpoint)
        self.metrics = MetricsEndpoint(make_registry(self.node.hubs, self.node.broker.health, self.config.hubs),
                                       self.keyring)
        self.metrics_address = metrics_address  # (host, port): /metrics without a key there; None: no such listener
        self._metrics_server: asyncio.AbstractServer | None = None
        self.trace = self.settings.trace
        self.dashboard = Dashboard(self.node, self.keyring, self.trace, lambda: self.endpoint,
                                   self.metrics.registry.collect, enabled=dashboard)
        self.front_doors: set[FrontDoor] = set()
        self.draining = False
        self._hurry = asyncio.Event()  # cuts a drain short (see hurry)
        self._server: asyncio.AbstractServer | None = None
        self.keepalive_seconds = keepalive_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self._tasks: list[asyncio.Task[None]] = []
        # Both are caused by clients at will: logged each time, but never more than a few lines a second.
        self._refusals = RateLimitedLog(client_log, "refused handshakes")
        self._upstream_failures = RateLimitedLog(logging.getLogger("fastpush.events"), "upstream failures")

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        secure = self.ssl_context is not None
        await self.node.start()
        self.connection_limits = ConnectionLimits(self._connection_cap(), self.max_connections_per_ip)
        self._server = await loop.create_server(lambda: FrontDoor(self, secure), self.host, self.port,
                                                ssl=self.ssl_context, reuse_address=True, backlog=4096,
                                                reuse_port=self.reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        heartbeat = Heartbeat(self.node.hubs, self.keepalive_seconds, self.idle_timeout_seconds,
                              [float(s.web_socket_keep_alive_interval_in_seconds) for s in self.config.hubs.values()
                               if s.web_socket_keep_alive_interval_in_seconds is not None])
        if self.metrics_address is not None:
            try:
                await self._listen_for_metrics(*self.metrics_address)
            except BaseException:
                self._server.close()
                raise
        self._tasks = [loop.create_task(self._sweep_idle_http()), loop.create_task(heartbeat.run()),
                       loop.create_task(self._sweep_hubs()), loop.create_task(self._watch_broker())]
        self.dashboard.start()
        ignored = ignored_settings(self.config)
        if ignored and self.warn_ignored_settings:
            log.warning("the config file's hub settings hold what fastpush ignores: %s", "; ".join(ignored))
        log.info("fastpush listening on %s", self.endpoint)
        return self

    async def stop(self) -> None:
        """Close every WebSocket with a close frame, then every HTTP connection, then the socket."""
        if self._server is None:
            return
        self._server.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        for task in self._tasks:
            task.cancel()
        self.dashboard.stop()
        conns = [c for hub in self.node.hubs() for c in hub.connections]
        for conn in conns:
            conn.close(CloseCode.GOING_AWAY, "The server is shutting down.")
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
        await self.node.stop()
        for door in list(self.front_doors):
            door.close_idle()
        await asyncio.sleep(0)
        await self._server.wait_closed()
        self._server = None
        if self._metrics_server is not None:
            await self._metrics_server.wait_closed()
            self._metrics_server = None

    async def drain(self, timeout: float = DRAIN_TIMEOUT_SECONDS) -> None:
        """Leave without losing a message, then stop (SIGTERM). The port stops listening here, so
        new connections go to the other processes on it, or other nodes. Every client is closed
        with 1012, on which the SDKs reconnect at once; a reliable client's session stays here
        until its client, recovering on another node, takes it there with everything it has not
        acknowledged (fastpush.broker.redis.handover). HTTP requests already on their way are
        answered, and each connection closed after its answer. Stops once nothing is left, or no
        other node is there to take a session (the one-node broker: never), or after `timeout`
        seconds; then as `stop`."""
        if self._server is None or self.draining:
            return
        self.draining = True
        self._server.close()
        self.node.broker.begin_drain()
        for door in list(self.front_doors):
            door.drain()
        started = time.monotonic()
        log.info("draining: no longer listening; %d connections to hand over or close",
                 self.node.connection_count, extra={"event": "draining"})
        told: set[str] = set()
        while True:
            elsewhere = await self._others_serving()
            for hub in self.node.hubs():
                for conn in tuple(hub.connections):
                    if isinstance(conn, ClientConnection) and conn.connection_id not in told:
                        told.add(conn.connection_id)  # the ones there at first, and any admitted since
                        keep = elsewhere and conn.keep_session
                        conn.close(CloseCode.SERVICE_RESTART, DRAIN_REASON, notify=not keep, keep_session=keep)
            left = self.node.connection_count
            if not left or not elsewhere or self._hurry.is_set() or time.monotonic() - started >= timeout:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), DRAIN_CHECK_SECONDS)
        fields = {"event": "drained", "left": left, "seconds": round(time.monotonic() - started, 3)}
        if left and elsewhere:
            log.warning("drain timed out after %(seconds).1f s: %(left)d connections were not handed over",
                        fields, extra=fields)
        else:
            log.info("drained in %(seconds).1f s (%(left)d connections left with nowhere to go)", fields,
                     extra=fields)
        await self.stop()

    async def _watch_broker(self) -> None:
        """A node cut off from Redis no longer hears what the other nodes publish, and cannot move
        sessions: once that has lasted broker_loss_timeout_seconds, every client is closed with
        1012 and its session ends, so it connects again (a load balancer sends it to a node that
        hears everything) and knows it may have missed messages, instead of waiting silently.
        Shorter losses (a Redis restart, a Sentinel failover) keep the clients."""
        lost_since: float | None = None
        told: set[str] = set()  # closed during this loss (sessions waiting for their client included)
        while True:
            await asyncio.sleep(BROKER_CHECK_SECONDS)
            if self.node.broker.health()["healthy"]:
                lost_since = None
                told.clear()
                continue
            now = time.monotonic()
            lost_since = now if lost_since is None else lost_since
            if now - lost_since < self.broker_loss_timeout_seconds:
                continue
            if not told:
                log.error("the cluster broker has been unreachable for %.1f s: closing every client",
                          now - lost_since, extra={"event": "broker_lost"})
            for hub in self.node.hubs():
                for conn in tuple(hub.connections):
                    if isinstance(conn, ClientConnection) and conn.connection_id not in told:
                        told.add(conn.connection_id)
                        COUNTERS.broker_loss_closed()
                        conn.close(CloseCode.SERVICE_RESTART, BROKER_LOST_REASON, notify=True)

    def hurry(self) -> None:
        """End a drain under way now (a second signal): what is left is closed as `stop` does."""
        self._hurry.set()

    async def _others_serving(self) -> bool:
        """Whether another node can take this one's sessions (not if Redis cannot tell)."""
        try:
            return await resolve(self.node.broker.others_serving())
        except BrokerUnavailable:
            return False

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _sweep_idle_http(self) -> None:
        """One timer for every HTTP connection: close (or answer 408) those past their deadline
        (head, body or keep-alive: FrontDoor.expire). Handed-off WebSockets are not walked."""
        shortest = min(self.request_head_timeout_seconds, self.request_body_timeout_seconds,
                       self.http_keepalive_timeout_seconds)
        interval = max(min(HTTP_SWEEP_SECONDS, shortest / 4), 0.01)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for door in [d for d in self.front_doors if d.deadline < now]:
                door.expire()

    async def _listen_for_metrics(self, host: str, port: int) -> None:
        """The separate metrics listener: plain HTTP, /metrics only, no key asked."""
        gate = MetricsGate(self.metrics, self.front_doors, self.request_head_timeout_seconds,
                           self.http_keepalive_timeout_seconds)
        self._metrics_server = await asyncio.get_running_loop().create_server(
            lambda: FrontDoor(gate, False), host, port, reuse_address=True)
        self.metrics_address = (host, self._metrics_server.sockets[0].getsockname()[1])
        log.info("metrics on http://%s%s (no access key needed there)", format_address(*self.metrics_address),
                 METRICS_PATH)

    def hub(self, name: str) -> HubApi:
        """The embedding API for one hub: the Python server SDK's methods, without HTTP."""
        return HubApi(self.node, self.node.hub(name))

    def client_access_url(self, hub: str, *, user_id: str | None = None, roles: tuple[str, ...] = (),
                          groups: tuple[str, ...] = (), minutes_to_expire: int = 60) -> str:
        """A ws(s):// URL with a signed access token, as `get_client_access_token()['url']` gives."""
        return client_access_url(self.keyring, self.endpoint, hub, user_id=user_id, roles=roles, groups=groups,
                                 minutes_to_expire=minutes_to_expire)

    # --- what clients are told --------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The URL the SDKs are given (and sign REST tokens for), port always written. `public_host`
        may be `name`, `name:port`, an IPv6 address, or `scheme://name[:port]` (a TLS-terminating
        proxy in front); without a port: the listening one, or with a scheme, that scheme's default."""
        scheme = "https" if self.ssl_context is not None else "http"
        host = self.public_host or (self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1")
        port = self.port
        if "://" in host:
            scheme, _, host = host.partition("://")
            scheme, host = scheme.lower(), host.rstrip("/")
            port = 443 if scheme == "https" else 80
        if host.count(":") > 1 and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        if ":" in host.rpartition("]")[2]:
            host, _, port_text = host.rpartition(":")
            port = int(port_text)
        return f"{scheme}://{host}:{port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.keyring.primary};Version=1.0;"

    # --- the front door's gate ----------------------------------------------------------------
    def handle_rest(self, request: Request) -> Outcome[Response]:
        if request.raw_path == METRICS_PATH:
            return self.metrics.answer(request, authenticated=False)
        if is_dashboard_path(request.raw_path):
            return self.dashboard.handle(request)
        if self.trace.active:
            started = time.perf_counter()
            return then(self.rest.handle(request), lambda response: self._traced(request, response, started))
        return self.rest.handle(request)

    def _traced(self, request: Request, response: Response, started: float) -> Response:
        """A REST call in the Live Trace: method, path, status, body size, time to answer."""
        segments = request.raw_path.split("/")
        hub = segments[3] if len(segments) > 3 and segments[1:3] == ["api", "hubs"] else None
        if self.trace.active:
            self.trace.tell("rest", {"event": request.method, "hub": hub, "target": request.raw_path,
                                     "size": len(request.body), "status": response.status,
                                     "durationMs": round((time.perf_counter() - started) * 1000, 3)}, request.body)
        return response

    def decide_upgrade(self, request: Request) -> Outcome[Handoff | Response]:
        """A Handoff or an HTTP refusal; a coroutine giving one when a connect event must be asked."""
        if is_dashboard_path(request.raw_path):
            return self.dashboard.decide_upgrade(request)
        if self.draining:  # reached on a connection opened before the drain; new ones go elsewhere
            self._log_refusal(request.peer, None, 503, DRAIN_REASON)
            return error_response(503, "ServiceUnavailable", DRAIN_REASON)
        decision = decide_upgrade(request, self.keyring, self._anonymous_allowed)
        if isinstance(decision, Reject):
            self._log_refusal(request.peer, None, decision.status, decision.message)
            return decision.response()
        if decision.recovery_of is not None:
            return self._recover(decision)
        if self.node.connection_count >= self.connection_limits.max_total:
            # Reliable sessions waiting for their clients hold memory without a socket: they count.
            return self._refused(decision, 503, "ServiceUnavailable", "The server holds as many connections "
                                 "(sessions waiting to be recovered included) as it may; try again later.")
        # Authenticated from here on; the hub is registered once the client is admitted.
        hub = self.node.lookup(decision.hub)
        connection_id = _new_connection_id()
        if hub.events is not None and hub.events.wants_connect:
            return self._registered(hub, self._admit(hub, decision, connection_id, request))
        prepared = self.node.broker.prepare_connection(hub.name, decision.claims.user_id, decision.claims.groups)
        if isinstance(prepared, Awaitable):  # a cluster broker: subscriptions first
            return self._registered(hub, self._admit(hub, decision, connection_id, request, prepared))
        self.node.hub(hub.name)  # registers `hub` itself: the client joins it as picows takes the socket
        return Handoff(ClientConnection(self.node, hub, decision, connection_id, self.settings), decision.subprotocol)

    async def _admit(self, hub: Hub, decision: Accept, connection_id: str, request: Request,
                     prepared: Awaitable[tuple[str, ...]] | None = None) -> Handoff | Response:
        """The asynchronous part of an upgrade: the blocking `connect` event (which may refuse, or
        set userId, groups, roles, subprotocol), then the broker's preparation for the client."""
        ctx = None
        if prepared is None:
            ctx = EventContext(hub.name, connection_id, decision.claims.user_id, decision.subprotocol)
            refused = await self._ask_connect(hub, decision, ctx, request)
            if refused is not None:
                return refused
        try:
            user_groups = await resolve(prepared if prepared is not None else self.node.broker.prepare_connection(
                hub.name, decision.claims.user_id, decision.claims.groups))
        except BrokerUnavailable as exc:
            return self._refused(decision, 503, "ServiceUnavailable", str(exc))
        decision.claims.groups = (*decision.claims.groups, *user_groups)
        conn = ClientConnection(self.node, hub, decision, connection_id, self.settings, ctx)
        return Handoff(conn, decision.subprotocol)

    async def _recover_elsewhere(self, hub: Hub, decision: Accept,
                                 taken: Awaitable[SessionReservation | None]) -> Handoff | Response:
        """The session is on another node: reserve it, then move it here. Once reserved, the move
        completes even if the client leaves meanwhile (a move cut short could lose the session):
        the session then waits here for its client, as a dropped one does."""
        try:
            reservation = await taken
        except BrokerUnavailable as exc:
            COUNTERS.recovery_refused(str(exc))
            return self._refused(decision, 503, "ServiceUnavailable", str(exc))
        if reservation is None:
            return self._refused_recovery(decision, "The session to recover was not found, or its token did not "
                                                    "match.")
        key = (hub.name.lower(), reservation.connection_id)
        move = self._moving_in[key] = asyncio.ensure_future(self._move_here(hub, decision, reservation))
        move.add_done_callback(lambda _: self._moving_in.pop(key) if self._moving_in.get(key) is move else None)
        return await asyncio.shield(move)

    async def _after_move(self, move: asyncio.Future[Handoff | Response], decision: Accept) -> Handoff | Response:
        """A recovery of a session that is moving onto this node (an earlier attempt of the same
        client, given up): resume it here once it has arrived, or take it from where it is then."""
        await asyncio.wait((move,))
        return await resolve(self._recover(decision))

    async def _move_here(self, hub: Hub, decision: Accept, reservation: SessionReservation) -> Handoff | Response:
        """Subscribe to what the session needs, then move it here at one point of the cluster's
        order, so it misses nothing and gets nothing twice (fastpush.broker.redis.handover)."""
        conn = ClientConnection.adopt(self.node, hub, self.settings, reservation.identity)
        conn.address = decision.address
        arrived = False

        def arrive() -> None:
            nonlocal arrived
            arrived = True
            self.node.hub(hub.name)  # registers `hub` itself, which the session joins now
            conn.arrived()
        try:
            await resolve(self.node.broker.prepare_connection(hub.name, conn.user_id, conn.groups_to_join))
            state = await resolve(self.node.broker.move_session(reservation, arrive))
        except BrokerUnavailable as exc:
            if arrived:
                conn.end_session()  # moved, but its state did not follow: it is lost
            return self._refused(decision, 503, "ServiceUnavailable", str(exc))
        if not arrived:  # a newer recovery took the reservation over, or the session ended meanwhile
            return self._refused(decision, 503, "ServiceUnavailable", "The session is moving; try again.")
        if state is None:
            conn.end_session()
            return self._refused_recovery(decision, "The session ended on the node that held it.")
        conn.take_state(reservation.identity, state)
        if conn.replay_overflowed:
            conn.end_session()
            return self._refused_recovery(decision, "The reliable message buffer overflowed; the session cannot "
                                                    "be resumed.")
        return Handoff(conn, decision.subprotocol)

    async def _ask_connect(self, hub: Hub, decision: Accept, ctx: EventContext, request: Request) -> Response | None:
        if hub.events is None:  # the embedding program took its handlers away meanwhile
            return None
        try:
            result = await hub.events.connect(ctx, _connect_request(request, decision))
        except EventRejected as exc:
            return self._refused(decision, exc.status, _ERROR_CODES.get(exc.status, "ConnectRejected"),
                                 exc.message or "The connect event handler refused the connection.")
        if result is not None:
            refusal = _invalid_connect_result(result)
            if refusal is not None:
                log.warning("hub %s: the connect event handler answered %s", hub.name, refusal)
                return error_response(500, "InternalServerError", f"The connect event handler answered {refusal}")
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
        if settings.web_socket_keep_alive_interval_in_seconds is not None:
            hub.keepalive_seconds = float(settings.web_socket_keep_alive_interval_in_seconds)
        policy = self._last_value_policy(hub.name)
        if policy is not None:
            broker = self.node.broker
            hub.last_values = LastValues(policy, broker.last_values if isinstance(broker, RedisBroker) else None)
        hub.conflation = conflation_rules(settings)
        if not settings.event_handlers:
            return
        events = hub.events = hub.events or HubEvents()
        for handler in settings.event_handlers:
            upstream = HttpUpstream(handler.url_template, self._upstream(), self._access_keys, self._origin(),
                                    self.config.upstream_timeout_seconds, self._upstream_failures, self.trace)
            events.add(HandlerRule(handler.user_event_pattern, tuple(e.lower() for e in handler.system_events)),
                       upstream)
            if handler.group_presence_events is not None and handler.group_presence_events.event_names:
                events.add_presence(presence_rule(handler.group_presence_events), upstream)

    def _last_value_policy(self, hub: str) -> LastValuePolicy | None:
        return self._last_value_policies.get(hub.lower())

    def _upstream(self) -> HttpClient:
        if self._upstream_client is None:
            self._upstream_client = HttpClient(max_connections=self.max_upstream_connections,
                                               max_waiting=self.max_upstream_waiting,
                                               max_response_bytes=self.max_message_bytes)
        return self._upstream_client

    def _access_keys(self) -> list[str]:
        return [k for k in (self.keyring.primary, self.keyring.secondary) if k]

    def _origin(self) -> str:
        """WebHook-Request-Origin: the bare host of the public endpoint (what the middlewares compare)."""
        return self.endpoint.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    def _anonymous_allowed(self, name: str) -> bool:
        """The config file's anonymousConnectPolicy for a hub, read without making the hub (asked
        before the client has proven anything)."""
        settings = next((s for hub, s in self.config.hubs.items() if hub.lower() == name.lower()), None)
        return settings is not None and settings.anonymous_connect_policy.lower() == "allow"

    def _recover(self, decision: Accept) -> Handoff | Awaitable[Handoff | Response]:
        """A reliable client coming back (no access token needed): resume its session here, take
        it from another node, or refuse; a hub is registered only for a session found elsewhere."""
        session = decision.recovery_of
        assert session is not None
        move = self._moving_in.get((decision.hub.lower(), session))
        if move is not None:  # before the hub is asked: the session joins it before it is complete
            return self._after_move(move, decision)
        hub = self.node.find(decision.hub)
        conn = hub.connection(session) if hub is not None else None
        if isinstance(conn, ClientConnection):
            refusal = conn.recovery_refusal(decision.recovery_token, decision.subprotocol)
            if refusal is None:
                conn.address = decision.address
                return Handoff(conn, decision.subprotocol)
            return self._refused_recovery(decision, refusal)
        hub = hub or self.node.lookup(decision.hub)
        taken = self.node.broker.take_session(hub.name, session, decision.recovery_token,
                                              decision.subprotocol)
        if isinstance(taken, Awaitable):  # a cluster broker: another node may hold it
            return self._registered(hub, self._recover_elsewhere(hub, decision, taken))
        return self._refused_recovery(decision, "The session to recover was not found.")

    def _refused(self, decision: Accept, status: int, code: str, message: str) -> Response:
        self._log_refusal(decision.address, decision.hub, status, message)
        return error_response(status, code, message)

    def _refused_recovery(self, decision: Accept, reason: str) -> Handoff:
        """Recovery is refused after the upgrade, with close code 1008 (see _RefusedRecovery)."""
        COUNTERS.recovery_refused(reason)
        self._log_refusal(decision.address, decision.hub, CloseCode.POLICY_VIOLATION, reason)
        return Handoff(_RefusedRecovery(reason), decision.subprotocol)

    def _log_refusal(self, address: str, hub: str | None, status: int, reason: str) -> None:
        """One line per refused handshake (rate-limited): `status` is the HTTP status, or for a
        refused recovery the close code."""
        if self.trace.active:
            self.trace.tell("connection", {"event": "refused", "hub": hub, "address": address, "status": int(status),
                                           "reason": reason})
        self._refusals.log(logging.WARNING, "refused a client handshake from %(address)s (hub %(hub)s): "
                                            "%(status)d %(reason)s",
                           {"event": "refused", "address": address, "hub": hub, "status": int(status),
                            "reason": one_line(reason)})

    async def _registered(self, hub: Hub, admitting: Awaitable[Handoff | Response]) -> Handoff | Response:
        """An admission that had to wait: if it admits a client, register its hub (the client joins
        it as soon as picows takes the socket); a refusal leaves the hub unregistered, to be freed."""
        decision = await admitting
        if isinstance(decision, Handoff) and isinstance(decision.listener, ClientConnection):
            self.node.hub(hub.name)  # the node's live hub of that name is `hub` itself
        return decision

    async def _sweep_hubs(self) -> None:
        """Drop hubs that were emptied without a connection leaving (Node.drop_empty_hubs)."""
        while True:
            await asyncio.sleep(HUB_SWEEP_SECONDS)
            self.node.drop_empty_hubs()

    def _connection_cap(self) -> int:
        """max_connections, or when it is None, what the open-file limit leaves for clients."""
        if self.max_connections is not None:
            return self.max_connections
        return default_max_connections(self.max_upstream_connections)


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


def _invalid_connect_result(result: ConnectResult) -> str | None:
    """What is wrong with a connect handler's answer (an upstream's, or an in-process callback's)."""
    if result.user_id is not None and not (isinstance(result.user_id, str) and is_valid_user(result.user_id)):
        return user_error(str(result.user_id))
    for group in result.groups or ():
        if not (isinstance(group, str) and is_valid_group(group)):
            return group_error(str(group))
    if not all(isinstance(role, str) for role in result.roles or ()):
        return "a role that is not a string"
    try:
        check_roles(result.roles or ())
    except RoleError as exc:
        return f"an unusable role: {exc}"
    return None


def client_access_url(keyring: KeyRing, endpoint: str, hub: str, *, user_id: str | None = None,
                      roles: tuple[str, ...] = (), groups: tuple[str, ...] = (), minutes_to_expire: int = 60) -> str:
    """The ws(s):// URL with a signed client token for `endpoint` (http(s)://host:port)."""
    token = keyring.issue_client(endpoint, hub, user_id=user_id, roles=roles, groups=groups,
                                 minutes_to_expire=minutes_to_expire)
    return "ws" + endpoint[4:] + f"/client/hubs/{hub}?access_token={token}"


class _Sessions:
    """The reliable sessions this node holds, as the node describes and gives them up to the node
    their clients recovered onto (fastpush.node.SessionKeeper). One still moving here (`moving_in`)
    cannot move on before it is complete."""

    def __init__(self, moving_in: dict[tuple[str, str], asyncio.Future[Handoff | Response]]):
        self._moving_in = moving_in

    def describe(self, hub: Hub, connection_id: str, token: str | None, subprotocol: str | None) -> bytes | None:
        if (hub.name.lower(), connection_id) in self._moving_in:
            raise SessionMoving(connection_id)
        conn = hub.connection(connection_id)
        return conn.describe(token, subprotocol) if isinstance(conn, ClientConnection) else None

    def give_up(self, hub: Hub, connection_id: str) -> bytes | None:
        conn = hub.connection(connection_id)
        return conn.give_up() if isinstance(conn, ClientConnection) else None


def _new_connection_id() -> str:
    return secrets.token_urlsafe(16)


class _RefusedRecovery(WSListener):
    """A reliable client asking for a session fastpush cannot resume: upgrade, then close 1008
    with the reason, which tells the SDKs to stop recovering and connect afresh."""

    def __init__(self, reason: str):
        self.reason = reason

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send_close(WSCloseCode.POLICY_VIOLATION, self.reason.encode()[:123])
        asyncio.get_running_loop().call_later(2.0, transport.disconnect)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()
