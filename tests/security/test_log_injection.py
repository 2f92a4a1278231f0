"""Client-chosen text that reaches the log (a refused token's audience, say) cannot forge lines:
control characters are escaped, so one refusal is one line."""
from __future__ import annotations

import logging

import jwt
import pytest
import websockets

from tests.security.conftest import assert_still_serving


async def test_a_refusal_reason_cannot_forge_log_lines(make_server, hub_name, caplog):
    server = make_server()  # its own refusal log: the shared server's may be at its rate limit
    forged = "https://x/\n2026-12-01 00:00:00 ERROR fastpush: forged line\r\n"
    token = jwt.encode({"aud": forged, "exp": 4102444800}, server.access_key.encode())
    url = "ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}?access_token={token}"
    with caplog.at_level(logging.INFO, logger="fastpush"), pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url)
    assert refused.value.response.status_code == 401
    lines = [r.getMessage() for r in caplog.records if "refused a client handshake" in r.getMessage()]
    assert lines and all("\n" not in line and "\r" not in line for line in lines), lines
    assert any("forged line" in line for line in lines)  # escaped, not dropped
    await assert_still_serving(server)
