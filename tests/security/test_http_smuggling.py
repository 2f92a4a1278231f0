"""Request smuggling and malformed heads at the front door: each ambiguous request is refused with
400 and the connection closed, so no second request can hide behind it."""
from __future__ import annotations

import socket

import pytest

from tests.security.conftest import assert_still_serving

HIDDEN = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
CASES = {
    "transfer-encoding and content-length": b"POST /api/hubs/h/:send?api-version=2024-12-01 HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST /api/hubs/h/:send HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    "obfuscated transfer-encoding": b"POST /api/hubs/h/:send HTTP/1.1\r\nHost: x\r\n"
                                    b"Transfer-Encoding: xchunked\r\n\r\n",
    "two transfer-encodings": b"POST /api/hubs/h/:send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "bare LF line ends": b"GET /api/health HTTP/1.1\nHost: x\n\n",
    "obsolete line folding": b"GET /api/health HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    "space before the colon": b"GET /api/health HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "NUL in a header value": b"GET /api/health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    "negative content-length": b"POST /api/hubs/h/:send HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "chunk size overflow": b"POST /api/hubs/h/:send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"FFFFFFFFFFFFFFFFFF\r\n",
}


def _exchange(port: int, data: bytes) -> bytes:
    """Send `data`, read until the server closes (or 5 s pass: then the test fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("request_bytes", CASES.values(), ids=CASES.keys())
async def test_ambiguous_requests_are_refused_and_nothing_behind_them_is_answered(server, request_bytes):
    answer = _exchange(server.port, request_bytes + HIDDEN)
    statuses = [line for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert statuses == [b"HTTP/1.1 400 Bad Request"], answer
    assert b'"code":"BadRequest"' in answer
    await assert_still_serving(server)
