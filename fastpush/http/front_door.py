"""The one listening port's front door: HTTP/1.1 with keep-alive for REST, and WebSocket upgrades
handed to picows after fastpush has decided them (see shared/notes/picows-facts.md §1).
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

import httptools
from picows.picows import WSProtocol
from picows import WSAutoPingStrategy, WSUpgradeResponse, WSUpgradeResponseWithListener

from .messages import Request, Response, error_response

__all__ = ["FrontDoor", "Gate", "Handoff"]

log = logging.getLogger("fastpush.http")
_picows_log = logging.LoggerAdapter(logging.getLogger("fastpush.ws.picows"), {})

MAX_HEAD_BYTES = 64 * 1024
DISCARD_BUDGET_BYTES = 16 * 1024 * 1024  # how much of an oversized body is read and dropped
DISCARD_SECONDS = 5.0


class Handoff:
    """What the gate decided for an accepted upgrade: the listener and the subprotocol to echo."""

    __slots__ = ("listener", "subprotocol")

    def __init__(self, listener, subprotocol: str | None):
        self.listener = listener
        self.subprotocol = subprotocol


class Gate:
    """What the front door needs from the application (implemented by fastpush.app)."""

    max_body_bytes: int
    max_frame_bytes: int
    handle_rest: Callable[[Request], Response]
    decide_upgrade: Callable[[Request], "Handoff | Response | Awaitable[Handoff | Response]"]
    front_doors: set


class FrontDoor(asyncio.Protocol):
    __slots__ = ("_gate", "_transport", "_parser", "_secure", "_url", "_headers", "_body", "_body_size",
                 "_upgrade", "_closed", "last_active", "_busy", "_head_size", "_discard_budget",
                 "_pending", "_deciding", "_waiting")

    def __init__(self, gate: Gate, secure: bool):
        self._gate = gate
        self._secure = secure
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._upgrade: Request | None = None
        self._closed = False
        self._busy = False
        self._discard_budget = 0
        self._pending: bytearray | None = None  # bytes read while an upgrade awaits its decision
        self._deciding: asyncio.Task | None = None
        self._waiting: collections.deque | None = None  # responses in request order while one is pending
        self.last_active = time.monotonic()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._gate.front_doors.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._gate.front_doors.discard(self)
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
        if self._closed:
            return
        self.last_active = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._start_websocket(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if not self._closed:
                self._reply(error_response(400, "BadRequest", f"Malformed HTTP request: {exc}"), keep_alive=False)

    def close_idle(self) -> None:
        """Close a keep-alive connection that is not in the middle of a request."""
        if not self._busy and self._transport is not None:
            self._closed = True
            self._transport.close()

    # --- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._busy = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        self._check_head_size()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._head_size += len(name) + len(value)
        self._check_head_size()

    def on_headers_complete(self) -> None:
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
        if self._closed:
            return
        request = Request(self._parser.get_method().decode(), self._url.decode("latin-1"), self._headers,
                          b"".join(self._body), self._secure)
        self._body = []
        if self._parser.should_upgrade():
            self._upgrade = request  # httptools raises HttpParserUpgrade right after this callback
            return
        self._busy = False
        if request.raw_path.startswith("/client"):
            response = self._gate.decide_upgrade(request)
            if isinstance(response, Handoff):
                response = error_response(400, "BadRequest", "Expected a WebSocket upgrade request.")
        else:
            response = self._gate.handle_rest(request)
        keep_alive, head = self._parser.should_keep_alive(), request.method == "HEAD"
        if self._waiting is None and not inspect.isawaitable(response):
            self._reply(response, keep_alive=keep_alive, head=head)
        else:
            self._queue_reply(response, keep_alive, head)

    def _queue_reply(self, response, keep_alive: bool, head: bool) -> None:
        """Pipelined requests are answered in order, also when one answer has to wait (remote broker)."""
        if self._waiting is None:
            self._waiting = collections.deque()
        entry = [response, keep_alive, head]
        self._waiting.append(entry)
        if inspect.isawaitable(response):
            task = asyncio.ensure_future(response)
            entry[0] = task
            task.add_done_callback(lambda t: self._settled(entry, t))
        self._flush_ready()

    def _settled(self, entry: list, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("answering a REST request failed", exc_info=task.exception())
            entry[0] = error_response(500, "InternalServerError", "The server failed to process the request.")
        else:
            entry[0] = task.result()
        self._flush_ready()

    def _flush_ready(self) -> None:
        waiting = self._waiting
        while waiting and isinstance(waiting[0][0], Response):
            response, keep_alive, head = waiting.popleft()
            self._reply(response, keep_alive=keep_alive, head=head)
        if not waiting:
            self._waiting = None

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
        asyncio.get_running_loop().call_later(DISCARD_SECONDS, self._transport.close)

    def _discard(self, size: int) -> None:
        self._discard_budget -= size
        if self._discard_budget <= 0 and self._transport is not None:
            self._transport.close()

    def _reply(self, response: Response, *, keep_alive: bool, head: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
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

    async def _await_decision(self, request: Request, pending: Awaitable) -> None:
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

    def _apply(self, request: Request, decision: "Handoff | Response", tail: bytes) -> None:
        if isinstance(decision, Response):
            self._reply(decision, keep_alive=False)
            return
        self._hand_off(request, decision, tail)

    def _hand_off(self, request: Request, decision: Handoff, tail: bytes) -> None:
        """Give the transport to a picows WSProtocol and replay a minimal upgrade request to it."""
        transport = self._transport
        extra = {"Sec-WebSocket-Protocol": decision.subprotocol} if decision.subprotocol else None
        accepted = WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra), decision.listener)
        protocol = WSProtocol(None, None, False, lambda _request: accepted, _picows_log, True, 5.0,
                              False, 20.0, 10.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
                              self._gate.max_frame_bytes, None, 2048)
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
