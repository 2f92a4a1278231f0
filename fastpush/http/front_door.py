"""The one listening port's front door: HTTP/1.1 with keep-alive for REST, and WebSocket upgrades
handed to picows after fastpush has decided them. picows has no public way to take over a socket
that is already accepted, so _hand_off builds picows' own WSProtocol (picows.picows, positional
arguments), switches the transport to it and replays a minimal upgrade request; picows 2.3.1's
ws_connect switches protocols the same way on the client side (docs/architecture.md).

Slow or greedy clients are bounded here. Each HTTP connection has one deadline at a time, which
the server's single sweep checks (no timer per connection): the whole request head, then each
body, must arrive in time, and an idle keep-alive connection is closed. Open sockets, HTTP and
WebSocket alike, are counted per client address and in total; one over a cap is answered 503.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import resource
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, cast

import httptools
from picows import (
    WSAutoPingStrategy,
    WSListener,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from ..handshake import NOT_AN_UPGRADE, Reject, upgrade_refusal
from ..metrics.counters import COUNTERS
from .messages import Request, Response, error_response

if TYPE_CHECKING:
    from logging import _ExcInfoType

    class WSProtocol(asyncio.BufferedProtocol):
        """What is used here of picows' internal protocol class, which picows' stub leaves out."""

        def __init__(self, host_port: str | None, ws_path: str | None, is_client_side: bool,
                     ws_listener_factory: Callable[[WSUpgradeRequest],
                                                   WSListener | WSUpgradeResponseWithListener | None],
                     logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
                     disconnect_on_exception: bool, websocket_handshake_timeout: float | None,
                     enable_auto_ping: bool, auto_ping_idle_timeout: float, auto_ping_reply_timeout: float,
                     auto_ping_strategy: WSAutoPingStrategy, enable_auto_pong: bool, max_frame_size: int,
                     extra_headers: Mapping[str, str] | None, read_buffer_init_size: int) -> None: ...

        def get_buffer(self, sizehint: int) -> memoryview: ...
else:
    from picows.picows import WSProtocol

__all__ = ["ConnectionLimits", "FrontDoor", "Gate", "Handoff", "default_max_connections"]

log = logging.getLogger("fastpush.http")


class _PicowsLog(logging.LoggerAdapter[logging.Logger]):
    """picows reports a client's malformed frame at ERROR; it is the client's mistake (answered
    with its close code), so it is logged at DEBUG, where a flood of bad clients cannot fill the log."""

    def error(self, msg: object, *args: object, exc_info: _ExcInfoType | None = None, stack_info: bool = False,
              stacklevel: int = 1, extra: Mapping[str, object] | None = None, **kwargs: object) -> None:
        if isinstance(msg, str) and msg.startswith("WS parser error"):
            self.debug(msg, *args)
        else:
            super().error(msg, *args, exc_info=exc_info, stack_info=stack_info, stacklevel=stacklevel, extra=extra,
                          **kwargs)


_picows_log = _PicowsLog(logging.getLogger("fastpush.ws.picows"), {})

MAX_HEAD_BYTES = 64 * 1024
DISCARD_BUDGET_BYTES = 16 * 1024 * 1024  # how much of an oversized body is read and dropped
DISCARD_SECONDS = 5.0
REFUSED_LINGER_SECONDS = 1.0  # a refused socket reads (and drops) its request this long, so the 503 arrives
REFUSAL_LOG_SECONDS = 60.0  # refusals are logged at most once per address in this time
FD_RESERVE = 64  # descriptors kept for listening sockets, Redis, files, DNS: see default_max_connections
NEVER = math.inf


def default_max_connections(upstream_connections: int) -> int:
    """The cap on client sockets when `max_connections` is None: the soft open-file limit
    (RLIMIT_NOFILE) minus the upstream connection pool and FD_RESERVE, so that accept() never
    fails for want of a descriptor and Redis, upstream calls and files still get theirs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(soft - upstream_connections - FD_RESERVE, soft // 2)


class ConnectionLimits:
    """Open client sockets (HTTP, WebSocket, and refused ones until they close) per address and
    in total, against their caps, in this process (each worker counts its own). An address is the
    peer IP the socket sees: behind a proxy, the proxy's. Refusals are logged at most once a
    minute per address."""

    __slots__ = ("max_total", "max_per_ip", "total", "_per_ip", "_logged")

    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: dict[str, int] = {}
        self._logged: dict[str, float] = {}  # address -> when a refusal was last logged; oldest first

    def open(self, ip: str) -> str | None:
        """Count a new socket; the reason to refuse it, or None."""
        self.total += 1
        count = self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        if self.saturated:
            reason = f"The server is at its limit of {self.max_total} connections."
        elif count > self.max_per_ip:
            reason = f"Too many connections from this address (the limit is {self.max_per_ip})."
        else:
            return None
        self._log(ip, reason)
        return reason

    def release(self, ip: str) -> None:
        count = self._per_ip[ip] - 1
        if count:
            self._per_ip[ip] = count
        else:
            del self._per_ip[ip]
        self.total -= 1

    def open_from(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    @property
    def saturated(self) -> bool:
        return self.total > self.max_total

    def _log(self, ip: str, reason: str) -> None:
        now = time.monotonic()
        logged = self._logged
        while logged:  # entries are in time order: forget the expired ones from the front
            oldest = next(iter(logged))
            if now - logged[oldest] < REFUSAL_LOG_SECONDS:
                break
            del logged[oldest]
        if ip not in logged:
            logged[ip] = now
            log.warning("refusing a connection from %s: %s (not logged again for this address for %.0f s)",
                        ip, reason, REFUSAL_LOG_SECONDS)


class Handoff:
    """What the gate decided for an accepted upgrade: the listener and the subprotocol to echo."""

    __slots__ = ("listener", "subprotocol")

    def __init__(self, listener: WSListener, subprotocol: str | None):
        self.listener = listener
        self.subprotocol = subprotocol


class Gate(Protocol):
    """What the front door needs from the application (implemented by fastpush.app's Server)."""

    max_body_bytes: int
    max_message_bytes: int
    request_head_timeout_seconds: float
    request_body_timeout_seconds: float
    http_keepalive_timeout_seconds: float
    connection_limits: ConnectionLimits
    front_doors: set[FrontDoor]  # the HTTP connections (not the handed-off WebSockets), for the deadline sweep
    draining: bool  # leaving: each connection closes after the answers under way (see FrontDoor.drain)

    def handle_rest(self, request: Request) -> Response | Awaitable[Response]:
        """The answer, or an awaitable of it (e.g. when a remote broker is asked)."""
        ...

    def decide_upgrade(self, request: Request) -> Handoff | Response | Awaitable[Handoff | Response]:
        """A Handoff or a refusal, or an awaitable of one (when a connect event is asked)."""
        ...


class _Queued:
    """A pipelined request's answer, kept in request order until it and all before it are ready."""

    __slots__ = ("response", "keep_alive", "head")

    def __init__(self, response: Response | asyncio.Future[Response], keep_alive: bool, head: bool):
        self.response = response
        self.keep_alive = keep_alive
        self.head = head


class FrontDoor(asyncio.Protocol):
    __slots__ = ("_gate", "_transport", "_parser", "_secure", "_url", "_headers", "_body", "_body_size",
                 "_upgrade", "_closed", "deadline", "_busy", "_in_body", "_head_size", "_discard_budget",
                 "_pending", "_deciding", "_waiting", "_ip")

    def __init__(self, gate: Gate, secure: bool):
        self._gate = gate
        self._secure = secure
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)  # None once handed off
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._upgrade: Request | None = None
        self._closed = False
        self._busy = False  # reading a request (its head or body)
        self._in_body = False
        self._discard_budget = 0
        self._pending: bytearray | None = None  # bytes read while an upgrade awaits its decision
        self._deciding: asyncio.Task[None] | None = None
        self._waiting: collections.deque[_Queued] | None = None  # responses in request order while one is pending
        self._ip: str | None = None  # the client address while this door holds its place in the counts
        self.deadline = NEVER  # when the sweep closes the connection (see expire)

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's protocol is always given a (read-write) Transport.
        self._transport = stream = cast(asyncio.Transport, transport)
        self._gate.front_doors.add(self)
        peer = transport.get_extra_info("peername")
        self._ip = peer[0] if isinstance(peer, tuple) else ""
        limits = self._gate.connection_limits
        refusal = limits.open(self._ip)
        if refusal is not None:
            self._refuse(stream, refusal, at_once=limits.saturated)
        else:  # the first request head must arrive within the head timeout, like every later one
            self.deadline = time.monotonic() + self._gate.request_head_timeout_seconds

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._gate.front_doors.discard(self)
        if self._ip is not None:
            self._gate.connection_limits.release(self._ip)
            self._ip = None
        if self._deciding is not None:  # the client left while its connect event was pending
            self._deciding.cancel()

    def data_received(self, data: bytes) -> None:
        if self._discard_budget > 0:
            self._discard(len(data))
            return
        if self._pending is not None:
            self._pending += data
            if len(self._pending) > MAX_HEAD_BYTES and self._transport is not None:
                self._transport.pause_reading()  # keeps the buffer capped; resumed at handoff
            return
        parser = self._parser
        if self._closed or parser is None:  # None only once handed off, which closes the door
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._start_websocket(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if not self._closed:
                self._reply(error_response(400, "BadRequest", f"Malformed HTTP request: {exc}"), keep_alive=False)

    def drain(self) -> None:
        """The server is draining: close now if between requests, else once the answers under way
        are written (the last one says `Connection: close`), so the client's next request opens a
        connection to a process that stays."""
        if not self._busy and self._waiting is None and self._deciding is None and self._parser is not None:
            self.close_idle()

    def close_idle(self) -> None:
        """Close a keep-alive connection that is not in the middle of a request."""
        if not self._busy and self._transport is not None:
            self._closed = True
            self._transport.close()

    def expire(self) -> None:
        """Past its deadline (found by the server's sweep). A body too slow is answered 408; a head
        too slow, an idle keep-alive connection or a refused one lingering is just closed."""
        transport = self._transport
        self.deadline = NEVER
        if transport is None or transport.is_closing():
            return
        if self._in_body and not self._closed:
            self._reply(error_response(408, "RequestTimeout", "The request body did not arrive within "
                                       f"{self._gate.request_body_timeout_seconds:g} s."), keep_alive=False)
        else:
            self._closed = True
            transport.close()

    def _refuse(self, transport: asyncio.Transport, reason: str, *, at_once: bool) -> None:
        """Over a connection cap: 503 before the request is read (the client reads it once it has
        sent). The socket is half-closed and drained for a moment, so the client sees the answer
        rather than a reset, unless the total cap is passed: then descriptors matter more."""
        transport.write(error_response(503, "ServiceUnavailable", reason).serialize(keep_alive=False))
        self._closed = True
        if at_once or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._discard_budget = DISCARD_BUDGET_BYTES
        self.deadline = time.monotonic() + REFUSED_LINGER_SECONDS

    # --- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._busy = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0
        self.deadline = time.monotonic() + self._gate.request_head_timeout_seconds

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        self._check_head_size()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._head_size += len(name) + len(value)
        self._check_head_size()

    def on_headers_complete(self) -> None:
        self._in_body = True
        self.deadline = time.monotonic() + self._gate.request_body_timeout_seconds
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._gate.max_body_bytes:
            self._too_large()

    def on_body(self, body: bytes) -> None:
        if self._closed:
            return
        self._body_size += len(body)
        if self._body_size > self._gate.max_body_bytes:
            self._too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        parser = self._parser
        if self._closed or parser is None:
            return
        request = Request(parser.get_method().decode(), self._url.decode("latin-1"), self._headers,
                          b"".join(self._body), self._secure, self._ip or "")
        self._body = []
        if parser.should_upgrade():
            self._upgrade = request  # httptools raises HttpParserUpgrade right after this callback
            self.deadline = NEVER  # while deciding: the connect event and the broker have their own timeouts
            return
        self._busy = False
        response: Response | Awaitable[Response]
        if request.raw_path.startswith("/client"):  # not an upgrade: refused before anything is decided
            response = (upgrade_refusal(request) or Reject(400, NOT_AN_UPGRADE)).response()
        else:
            response = self._gate.handle_rest(request)
        keep_alive, head = parser.should_keep_alive(), request.method == "HEAD"
        if self._waiting is None and not inspect.isawaitable(response):
            self._reply(response, keep_alive=keep_alive, head=head)
        else:
            self._queue_reply(response, keep_alive, head)
        self._await_next_request()

    def _await_next_request(self) -> None:
        """Between requests: no deadline while an answer is pending, then the keep-alive timeout."""
        if self._gate.draining and not self._busy and not self._waiting:
            self.close_idle()
        elif not self._busy:
            self.deadline = NEVER if self._waiting else time.monotonic() + self._gate.http_keepalive_timeout_seconds

    def _queue_reply(self, response: Response | Awaitable[Response], keep_alive: bool, head: bool) -> None:
        """Pipelined requests are answered in order, also when one answer has to wait (remote broker)."""
        if self._waiting is None:
            self._waiting = collections.deque()
        if inspect.isawaitable(response):
            task = asyncio.ensure_future(response)
            entry = _Queued(task, keep_alive, head)
            self._waiting.append(entry)
            task.add_done_callback(lambda t: self._settled(entry, t))
        else:
            self._waiting.append(_Queued(response, keep_alive, head))
        self._flush_ready()

    def _settled(self, entry: _Queued, task: asyncio.Future[Response]) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("answering a REST request failed", exc_info=task.exception())
            entry.response = error_response(500, "InternalServerError", "The server failed to process the request.")
        else:
            entry.response = task.result()
        self._flush_ready()

    def _flush_ready(self) -> None:
        waiting = self._waiting
        while waiting:
            entry = waiting[0]
            if not isinstance(entry.response, Response):  # still pending
                break
            waiting.popleft()
            self._reply(entry.response, keep_alive=entry.keep_alive, head=entry.head)
        if not waiting:
            self._waiting = None
            self._await_next_request()

    # --- helpers ----------------------------------------------------------------------------
    def _check_head_size(self) -> None:
        if self._head_size > MAX_HEAD_BYTES and not self._closed:
            self._reply(error_response(431, "RequestHeaderFieldsTooLarge",
                                       f"The request head is larger than {MAX_HEAD_BYTES} bytes."), keep_alive=False)

    def _too_large(self) -> None:
        """Answer 413, then keep reading (and dropping) the rest of the body for a while: closing at
        once would make the client fail with a broken pipe before it reads the answer."""
        if self._closed or self._transport is None:
            return
        response = error_response(413, "PayloadTooLarge",
                                  f"The request body is larger than {self._gate.max_body_bytes} bytes.")
        self._transport.write(response.serialize(keep_alive=False))
        self._closed = True
        self._discard_budget = DISCARD_BUDGET_BYTES
        self.deadline = time.monotonic() + DISCARD_SECONDS

    def _discard(self, size: int) -> None:
        self._discard_budget -= size
        if self._discard_budget <= 0 and self._transport is not None:
            self._transport.close()

    def _reply(self, response: Response, *, keep_alive: bool, head: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not (self._gate.draining and not self._waiting)
        transport.write(response.serialize(head=head, keep_alive=keep_alive))
        if not keep_alive:
            self._closed = True
            transport.close()

    def _start_websocket(self, tail: bytes) -> None:
        request, self._upgrade = self._upgrade, None
        if request is None:
            return
        decision = self._gate.decide_upgrade(request)
        if inspect.isawaitable(decision):
            # Keep reading meanwhile (into a capped buffer), so a client that goes away is seen
            # and its pending decision cancelled.
            self._pending = bytearray(tail)
            self._deciding = asyncio.get_running_loop().create_task(self._await_decision(request, decision))
            return
        self._apply(request, decision, tail)

    async def _await_decision(self, request: Request, pending: Awaitable[Handoff | Response]) -> None:
        try:
            decision = await pending
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("deciding the upgrade of %s failed", request.raw_path)
            decision = error_response(500, "InternalServerError", "The server failed to decide the upgrade.")
        self._deciding = None
        tail, self._pending = bytes(self._pending or b""), None
        if self._transport is None or self._transport.is_closing():
            return
        self._apply(request, decision, tail)

    def _apply(self, request: Request, decision: Handoff | Response, tail: bytes) -> None:
        if isinstance(decision, Response):
            COUNTERS.handshake_refused(decision.status)
            self._reply(decision, keep_alive=False)
            return
        self._hand_off(request, decision, tail)

    def _hand_off(self, request: Request, decision: Handoff, tail: bytes) -> None:
        """Give the transport to a picows WSProtocol and replay a minimal upgrade request to it."""
        transport = self._transport
        if transport is None:  # never: both callers have just checked that the client is still there
            return
        extra = {"Sec-WebSocket-Protocol": decision.subprotocol} if decision.subprotocol else None
        accepted = WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra), decision.listener)
        # No handshake timeout (None): the whole upgrade request is replayed below, so picows'
        # handshake ends before this method returns, and a timer per connection would only be
        # armed and cancelled.
        protocol = _CountedWSProtocol(None, None, False, lambda _request: accepted, _picows_log, True, None,
                                      False, 20.0, 10.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
                                      self._gate.max_message_bytes, None, 2048)
        protocol.limits, protocol.ip, self._ip = self._gate.connection_limits, self._ip, None
        head = _minimal_head(request.headers) + tail
        self._closed = True
        self._gate.front_doors.discard(self)
        transport.pause_reading()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        view = memoryview(head)
        while view:
            buffer = protocol.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
        if not transport.is_closing():
            transport.resume_reading()
        self._transport = None
        self._parser = None
        self._headers = {}


class _CountedWSProtocol(WSProtocol):
    """picows' protocol, giving the socket's place in the connection counts back when it closes
    (the front door no longer hears of it after the handoff). Nothing is added per message."""

    __slots__ = ("limits", "ip")
    limits: ConnectionLimits | None  # None once released
    ip: str | None  # the door's address (a str: a door hands off only while it holds its place)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            limits, self.limits = self.limits, None
            if limits is not None and self.ip is not None:
                limits.release(self.ip)


def _minimal_head(headers: dict[str, str]) -> bytes:
    """Only what picows needs: keeps the stored request small and the access token out of it.

    `Connection` is rewritten to `Upgrade` because picows accepts no other value (Firefox sends
    `keep-alive, Upgrade`); httptools has already checked the real header.
    """
    return (
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {headers.get('sec-websocket-key', '')}\r\n"
        f"Sec-WebSocket-Version: {headers.get('sec-websocket-version', '')}\r\n\r\n"
    ).encode("latin-1")
