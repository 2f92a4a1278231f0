"""Fuzzing the live front door (issue 9, "Fuzzing in CI"): raw bytes and almost-HTTP over real
sockets, and arbitrary frames from live WebSocket clients, all against one server per test.

Every connection gets an HTTP answer or a clean close within a deadline, a client mistake is
never a 500 or a close 1011, nothing is logged at ERROR, and the server still serves afterwards.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from urllib.parse import quote

import jwt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.helpers import JSON_RELIABLE_V1, JSON_V1, client_url
from tests.security.conftest import assert_still_serving
from tests.security.test_fuzz_codecs import json_messages, mutated, upstream_messages

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=200, deadline=None)
ANSWER_SECONDS = 5.0
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])[ \r]")
PROTOBUF_V1 = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE_V1 = "protobuf.reliable.webpubsub.azure.v1"
CLIENT_MISTAKE_CLOSES = {1002, 1003, 1007, 1008, 1009}
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture
def door(make_server, caplog):
    """A server of its own for one fuzz test (shared by all its examples); fails the test if
    anything was logged at ERROR, which is how a crash on a client mistake shows."""
    caplog.set_level(logging.WARNING)
    running = make_server()
    yield running
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and read until the server closes; fail if it neither answers nor
    closes within ANSWER_SECONDS. A reset after the server answered early counts as a close."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_SECONDS) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading it all (EPIPE, ECONNRESET, ENOTCONN)
            pass
        received = bytearray()
        deadline = time.monotonic() + ANSWER_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no answer and no close within {ANSWER_SECONDS}s for {data[:200]!r}"
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received)
            except TimeoutError:
                continue  # the assertion above reports it
            if not chunk:
                return bytes(received)
            received += chunk


def check_answer(request: bytes, reply: bytes) -> None:
    """An answer starts with a status line; no answer in it is a 500."""
    if not reply:
        return
    assert STATUS_LINE.match(reply), f"not an HTTP answer: {reply[:200]!r} to {request[:200]!r}"
    statuses = [int(m[1]) for m in re.finditer(rb"(?:^|\r\n)HTTP/1\.[01] ([0-9]{3}) ", reply)]
    assert 500 not in statuses, f"500 for a client mistake: {reply[:400]!r} to {request[:300]!r}"


# --- raw bytes ---------------------------------------------------------------------------------

def test_arbitrary_bytes_get_an_answer_or_a_close(door):
    @FUZZ
    @given(st.binary(max_size=600) | st.binary(max_size=200).map(lambda b: b"POST /api/hubs/h/:send HTTP/1.1\r\n" + b))
    @example(b"")
    @example(b"\r\n\r\n\r\n")
    @example(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS ClientHello on the plain port
    @example(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    def probe(data):
        check_answer(data, exchange(door.port, data))

    probe()
    asyncio.run(assert_still_serving(door))


# --- structured but wrong HTTP ----------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PRI", "get", "G\x00T",
           "", "POST POST", "M" * 100]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/1.10", "HTTPS/1.1", "http/1.1", "",
            "HTTP/1.1 x", "HTTP/", "HTTP/1.1\x00"]
HUBS = ["h", "Hub_1", "", "..", "%2e%2e", "a" * 200, "hub%00", "h%20b", "%C3%A9", "h%2Fx", "_", "1hub", "%ff", "."]
API_VERSIONS = ["2024-12-01", "2021-10-01", "", "latest", "2024-13-45", "%00", "2024-12-01&api-version=x", "9" * 50,
                "%ff", "2024-12-01%0d%0a"]
OPERATIONS = [":send", ":closeConnections", ":generateToken", ":addToGroups", ":removeFromGroups", "connections/c1",
              "connections/c1/:send", "connections/c1/groups", "groups/g", "groups/g/:send",
              "groups/g/:closeConnections",
              "groups/g/connections", "groups/g/connections/c1", "permissions/sendToGroup/connections/c1",
              "permissions/nope/connections/c1", "users/u", "users/u/:send", "users/u/groups/g", "groups/%00/:send",
              "groups/../:send", "users//:send", "groups/" + "g" * 2000 + "/:send", ""]
QUERY_EXTRAS = ["", "&excluded=x", "&messageTtlSeconds=-1", "&messageTtlSeconds=301",
                "&minutesToExpire=99999999999999999999",
                "&minutesToExpire=-1", "&clientType=x", "&group=", "&group=%00", "&userId=%ff", "&role=x",
                "&maxpagesize=0", "&maxpagesize=-5", "&continuationToken=zz", "&reason=%0d%0aX:%20y",
                "&targetName=" + "t" * 300, "&%zz=1", "&&&", "&filter=" + quote("userId eq 'a'"),
                "&filter=" + quote("(" * 500 + "true" + ")" * 500), "&filter=" + quote("'a' in (" + "1," * 2000 + "1)"),
                "&filter=%ff", "&filter="]
OTHER_TARGETS = ["/", "*", "http://127.0.0.1/api/health", "http://evil.example/api/hubs/h/:send?api-version=2024-12-01",
                 "//api/health", "/api/health/../health", "/api/health%00", "/api/../api/health", "/client/hubs/h",
                 "/client/hubs/h?access_token=x", "/client/hubs/%00", "/client/hubs/h/../../api/health", "/%", "/%zz",
                 "/api/hubs/h/../../etc/passwd", "/api/health?" + "a=b&" * 3000, "/" + "a" * 70_000, "/api/hubs",
                 "/api/hubs/h", "\\api\\health", "/api/health#frag", "/api/health\x00x"]
HEADER_NAMES = ["Host", "Content-Length", "Transfer-Encoding", "Content-Type", "Connection", "Upgrade",
                "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol", "Authorization", "Expect",
                "X-Forwarded-For", "Origin", "Bad Name", "", "Host\x00", "Content-Length ", "\x7f", "é"]
HEADER_VALUES = ["", "0", "-1", "10", "5", "99999999999999999999", "1, 2", "+5", "0x10", "chunked", "gzip, chunked",
                 "chunked, identity", "identity", "close", "keep-alive", "upgrade", "Upgrade, keep-alive", "websocket",
                 "13", "8", "dGhlIHNhbXBsZSBub25jZQ==", "json.webpubsub.azure.v1", "application/json", "text/plain",
                 "application/octet-stream", "multipart/form-data; boundary=x", "Bearer x", "Bearer",
                 "Basic Zm9vOmJhcg==",
                 "100-continue", "a\x00b", "a\rb", "a\nb", "a\r\n b", "é", "\xff", "x" * 9000]
CHUNK_SIZES = ["5", "0", "zz", "-1", "ffffffffffffffffffff", "0x10", "1;ext=1", " 5", "5 ", "", "A", "5\x00"]


@st.composite
def chunked_bodies(draw) -> bytes:
    """Chunks with sizes that are often wrong, and an end that may be missing."""
    body = b"".join(f"{size}\r\n".encode("latin-1") + data + b"\r\n"
                    for size, data in draw(st.lists(st.tuples(st.sampled_from(CHUNK_SIZES), st.binary(max_size=12)),
                                                     max_size=4)))
    end = draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n", b"", b"0\r\n"]))
    return body + end


@st.composite
def http_requests(draw) -> tuple[str, str, str, list[tuple[str, str]], int, bytes, bool]:
    """(method, target, version, headers, count of filler headers, body), and whether to sign."""
    method = draw(st.sampled_from(METHODS) | st.text(max_size=8))
    if draw(st.integers(0, 2)):
        # One f-string over two lines: the draws stay in the order Hypothesis replays them.
        target = (f"/api/hubs/{draw(st.sampled_from(HUBS))}/{draw(st.sampled_from(OPERATIONS))}"
                  f"?api-version={draw(st.sampled_from(API_VERSIONS))}{draw(st.sampled_from(QUERY_EXTRAS))}")
    else:
        target = draw(st.sampled_from(OTHER_TARGETS) | st.text(max_size=30))
    version = draw(st.sampled_from(VERSIONS))
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES) | st.text(max_size=8),
                                      st.sampled_from(HEADER_VALUES) | st.text(max_size=12)), max_size=8))
    fillers = draw(st.sampled_from([0, 0, 0, 100, 3000, 10_000]))
    body = draw(st.binary(max_size=200) | chunked_bodies() | st.sampled_from([b'{"groups":["g"]}', b"[" * 5000]))
    return method, target, version, headers, fillers, body, draw(st.booleans())


def assemble(server, method: str, target: str, version: str, headers: list[tuple[str, str]], fillers: int,
             body: bytes, sign: bool) -> bytes:
    headers = headers + [(f"X-H{i}", "v") for i in range(fillers)]
    if sign:
        token = jwt.encode({"aud": server.endpoint + target, "exp": int(time.time()) + 300},
                           server.access_key.encode(), algorithm="HS256")
        headers = [("Host", f"127.0.0.1:{server.port}"), ("Authorization", f"Bearer {token}"), *headers]
    head = f"{method} {target} {version}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + body


DEEP_ARRAYS = b"[" * 10_000 + b"]" * 10_000  # deeper than any recursion limit (hypothesis raises it)
DEEP_GROUPS_BODY = b'{"groups":["g"],"unknown":' + DEEP_ARRAYS + b"}"


def test_structured_but_wrong_http_requests(door):
    @settings(FUZZ, max_examples=400)
    @given(http_requests())
    @example(("POST", "/api/hubs/h/:send?api-version=2024-12-01", "HTTP/1.1",
              [("Content-Length", "5"), ("Content-Length", "6")], 0, b"hello!", True))
    @example(("POST", "/api/hubs/h/:send?api-version=2024-12-01", "HTTP/1.1",
              [("Transfer-Encoding", "chunked"), ("Content-Length", "3")], 0, b"5\r\nhello\r\n0\r\n\r\n", True))
    @example(("POST", "/api/hubs/h/:send?api-version=2024-12-01", "HTTP/1.1",
              [("Transfer-Encoding", "chunked")], 0, b"ffffffffffffffffffff\r\nx\r\n", True))
    @example(("POST", "/api/hubs/h/:send?api-version=2024-12-01", "HTTP/1.1",
              [("Content-Type", "application/json"), ("Content-Length", "20000")], 0, DEEP_ARRAYS, True))
    @example(("POST", "/api/hubs/h/:addToGroups?api-version=2024-12-01", "HTTP/1.1",
              [("Content-Type", "application/json"), ("Content-Length", str(len(DEEP_GROUPS_BODY)))], 0,
              DEEP_GROUPS_BODY, True))
    @example(("GET", "/client/hubs/h", "HTTP/1.1", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                    ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "x")],
              3000, b"", False))
    def probe(parts):
        request = assemble(door, *parts)
        check_answer(request, exchange(door.port, request))

    probe()
    asyncio.run(assert_still_serving(door))


# --- live WebSocket clients ---------------------------------------------------------------------

class LiveClient:
    """A client kept open across examples: each frame is followed by a ping, so the pong (or a
    close) tells when the server has dealt with it. A closed client is checked, then replaced."""

    def __init__(self, server, subprotocols: tuple[str, ...], ping: bytes, is_pong):
        self.server, self.subprotocols, self.ping, self.is_pong = server, subprotocols, ping, is_pong
        self.text = subprotocols[0].startswith("json")
        self.ws = None
        self._stack = contextlib.ExitStack()

    def open(self, subprotocol: str):
        if self.ws is not None and self.ws.subprotocol != subprotocol:
            self.close()
        if self.ws is None:
            url = client_url(self.server, "fuzz", user_id="fuzzer", roles=ROLES)
            self.ws = self._stack.enter_context(ws_connect(url, subprotocols=[subprotocol], compression=None,
                                                           max_size=None, open_timeout=10))
            self.ws.recv(timeout=ANSWER_SECONDS)  # connected
        return self.ws

    def exchange(self, subprotocol: str, frame: bytes, as_text: bool) -> None:
        ws = self.open(subprotocol)
        try:
            ws.send(frame, text=as_text)
            ws.send(self.ping, text=self.text)
            deadline = time.monotonic() + ANSWER_SECONDS
            while not self.is_pong(ws.recv(timeout=max(deadline - time.monotonic(), 0.01))):
                pass
        except TimeoutError:
            raise AssertionError(f"no pong and no close within {ANSWER_SECONDS}s after {frame[:200]!r}") from None
        except ConnectionClosed as closed:
            self.close()
            assert closed.rcvd is not None, f"closed without a close frame after {frame[:200]!r}"
            assert closed.rcvd.code in CLIENT_MISTAKE_CLOSES, (closed.rcvd.code, closed.rcvd.reason, frame[:300])
            assert closed.rcvd.reason, f"close {closed.rcvd.code} without a reason after {frame[:200]!r}"

    def close(self) -> None:
        self.ws = None
        self._stack.close()


def json_frames():
    return st.tuples(json_messages() | st.binary(max_size=120).flatmap(mutated)
                     | st.text(max_size=60).map(str.encode), st.sampled_from([True, True, False]))


def test_live_json_client_frames(door):
    client = LiveClient(door, (JSON_V1, JSON_RELIABLE_V1), b'{"type":"ping"}',
                        lambda reply: isinstance(reply, str) and '"pong"' in reply)
    setup = client.open(JSON_V1)
    setup.send('{"type":"joinGroup","group":"g","ackId":1}')

    @FUZZ
    @given(st.sampled_from(client.subprotocols), json_frames())
    @example(JSON_V1, (b'{"type":"sequenceAck","sequenceId":18446744073709551616}', True))
    @example(JSON_RELIABLE_V1, (b'{"type":"sendToGroup","group":"g","data":' + DEEP_ARRAYS + b"}", True))
    @example(JSON_V1, (b'{"type":"sendToGroup","group":"g","dataType":"text","data":"\xff"}', True))
    @example(JSON_V1, (b'{"type":"sendToGroup","group":"g","data":{"a":[1,2,{"b":null}]}}', True))
    def probe(subprotocol, message):
        frame, as_text = message
        client.exchange(subprotocol, frame, as_text)

    try:
        probe()
    finally:
        client.close()
    asyncio.run(assert_still_serving(door))


def test_live_protobuf_client_frames(door):
    client = LiveClient(door, (PROTOBUF_V1, PROTOBUF_RELIABLE_V1), b"\x4a\x00", lambda reply: reply == b"\x22\x00")
    setup = client.open(PROTOBUF_V1)
    setup.send(b"\x32\x05\x0a\x01g\x10\x01")  # join group "g", ackId 1

    @FUZZ
    @given(st.sampled_from(client.subprotocols),
           st.tuples(upstream_messages() | st.binary(max_size=120), st.sampled_from([False, False, True])))
    @example(PROTOBUF_V1, (b"\x42\x0c\x08" + b"\xff" * 10 + b"\x01", False))
    @example(PROTOBUF_RELIABLE_V1, (b"\x0a\x1c\x0a\x01g\x1a\x17\x22\x15" + b"[" * 10 + b"1" + b"]" * 10, False))
    def probe(subprotocol, message):
        frame, as_text = message
        client.exchange(subprotocol, frame, as_text)

    try:
        probe()
    finally:
        client.close()
    asyncio.run(assert_still_serving(door))
