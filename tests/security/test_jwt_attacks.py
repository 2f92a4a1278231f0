"""Forged, stolen and malformed tokens: a REST call is answered 401 with a reason, a client's
WebSocket upgrade is answered 401, and the server keeps serving everyone else."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import time

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import JSON_V1, client_token, connect
from tests.security.conftest import assert_still_serving

pytestmark = pytest.mark.timeout(60)

API = "api-version=2024-12-01"
HUGE = 1024 * 1024
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_PUBLIC_PEM = _RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hand_signed(header: dict, claims: dict, secret: bytes) -> str:
    """An HS256-signed token built by hand, whatever its header claims (pyjwt refuses to sign some)."""
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(claims).encode())
    return _signed(signing_input, secret)


def _signed(signing_input: bytes, secret: bytes) -> str:
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


DEEP = b"[" * 5000 + b"]" * 5000  # past any JSON parser's recursion limit


def forged(case: str, aud: str, key: str) -> str:
    """A token for `aud` that must be refused, made the way `case` says."""
    exp = int(time.time()) + 60
    good = {"aud": aud, "exp": exp}
    secret = key.encode()
    return {
        "alg-none": lambda: jwt.encode(good, None, algorithm="none"),
        "alg-none-with-signature": lambda: hand_signed({"alg": "none", "typ": "JWT"}, good, secret),
        "HS384": lambda: jwt.encode(good, secret, algorithm="HS384"),
        "HS512": lambda: jwt.encode(good, secret, algorithm="HS512"),
        "RS256": lambda: jwt.encode(good, _RSA_KEY, algorithm="RS256"),
        "RS256-public-key-as-hmac-secret": lambda: hand_signed({"alg": "RS256", "typ": "JWT"}, good, _RSA_PUBLIC_PEM),
        "HS256-public-key-as-hmac-secret": lambda: hand_signed({"alg": "HS256", "typ": "JWT"}, good, _RSA_PUBLIC_PEM),
        "wrong-key": lambda: jwt.encode(good, b"another key of a decent length, 32+", algorithm="HS256"),
        "base64-decoded-key": lambda: jwt.encode(good, base64.b64decode(key), algorithm="HS256"),
        "expired": lambda: jwt.encode({**good, "exp": int(time.time()) - 3600}, secret, algorithm="HS256"),
        "future-nbf": lambda: jwt.encode({**good, "nbf": int(time.time()) + 3600}, secret, algorithm="HS256"),
        "string-exp": lambda: jwt.encode({**good, "exp": "tomorrow"}, secret, algorithm="HS256"),
        "no-exp": lambda: jwt.encode({"aud": aud}, secret, algorithm="HS256"),
        "tampered-claims": lambda: _tampered(jwt.encode(good, secret, algorithm="HS256")),
        "deeply-nested-header": lambda: _signed(_b64(DEEP) + b"." + _b64(json.dumps(good).encode()), secret),
        "deeply-nested-claims": lambda: _signed(_b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + _b64(DEEP), secret),
        "garbage": lambda: "not.a.jwt",
        "empty": lambda: "",
    }[case]()


def _tampered(token: str) -> str:
    """The signature of one token on claims changed afterwards (a longer lifetime)."""
    header, _, signature = token.split(".")
    claims = _b64(json.dumps({"aud": "x", "exp": int(time.time()) + 10**6}).encode()).decode()
    return f"{header}.{claims}.{signature}"


FORGERIES = ["alg-none", "alg-none-with-signature", "HS384", "HS512", "RS256", "RS256-public-key-as-hmac-secret",
             "HS256-public-key-as-hmac-secret", "wrong-key", "base64-decoded-key", "expired", "future-nbf",
             "string-exp", "no-exp", "tampered-claims", "deeply-nested-header", "deeply-nested-claims", "garbage",
             "empty"]


def rest_call(server, target: str, token: str | None, *, headers: dict | None = None) -> tuple[int, dict | None]:
    all_headers = {"Content-Type": "text/plain", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", target, body=b"forged", headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


async def assert_rest_refused(server, target: str, token: str | None) -> str:
    status, body = await asyncio.to_thread(rest_call, server, target, token)
    assert status == 401, body
    assert body["code"] == "Unauthorized" and body["message"]
    return body["message"]


async def upgrade_status(server, hub: str, token: str) -> int:
    url = "ws" + server.endpoint[4:] + f"/client/hubs/{hub}?access_token={token}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, subprotocols=[JSON_V1], open_timeout=10)
    return refused.value.response.status_code


@pytest.fixture
async def listener(server, hub_name):
    """A client of the attacked hub that must receive no forged message."""
    client = await connect(server, hub_name, JSON_V1)
    yield client
    await client.expect_silence(0.2)
    await client.close()


# --- REST --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", FORGERIES)
async def test_forged_rest_token_is_401(server, hub_name, listener, case):
    target = f"/api/hubs/{hub_name}/:send?{API}"
    await assert_rest_refused(server, target, forged(case, server.endpoint + target, server.access_key))
    await assert_still_serving(server)


async def test_string_exp_is_answered_with_a_reason(server, hub_name, listener):
    target = f"/api/hubs/{hub_name}/:send?{API}"
    message = await assert_rest_refused(server, target, forged("string-exp", server.endpoint + target,
                                                               server.access_key))
    assert "exp" in message


async def test_client_token_used_for_rest_is_401(server, hub_name, listener):
    token = client_token(server.access_key, server.endpoint, hub_name)
    await assert_rest_refused(server, f"/api/hubs/{hub_name}/:send?{API}", token)
    await assert_still_serving(server)


async def test_rest_token_for_another_hub_is_401(server, hub_name, listener):
    other = server.endpoint + f"/api/hubs/other/:send?{API}"
    token = jwt.encode({"aud": other, "exp": int(time.time()) + 60}, server.access_key.encode(), algorithm="HS256")
    await assert_rest_refused(server, f"/api/hubs/{hub_name}/:send?{API}", token)
    await assert_still_serving(server)


@pytest.mark.parametrize("aud", [["{url}"], {"url": "{url}"}, 42, None])
async def test_rest_audience_of_the_wrong_type_is_401(server, hub_name, listener, aud):
    target = f"/api/hubs/{hub_name}/:send?{API}"
    url = server.endpoint + target
    aud = json.loads(json.dumps(aud).replace("{url}", url))
    token = jwt.encode({"aud": aud, "exp": int(time.time()) + 60}, server.access_key.encode(), algorithm="HS256")
    await assert_rest_refused(server, target, token)
    await assert_still_serving(server)


def huge_head_status(port: int, head: bytes) -> int | None:
    """Send a huge request head (while the server may stop reading it) and return the status it
    answers, or None when it closed without one; the socket timeout makes a hang a failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        # A broken pipe or a reset means it stopped reading: its answer may already be waiting.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            return None
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None


@pytest.mark.parametrize("where", ["authorization-header", "query-string"])
async def test_huge_rest_token_is_refused_at_the_front_door(server, hub_name, where):
    token = "a" * HUGE
    target = f"/api/hubs/{hub_name}/:send?{API}"
    if where == "query-string":
        target += f"&access_token={token}"
    head = (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            + (f"Authorization: Bearer {token}\r\n" if where == "authorization-header" else "")
            + "Content-Length: 0\r\n\r\n").encode()
    assert await asyncio.to_thread(huge_head_status, server.port, head) in (400, 414, 431)
    await assert_still_serving(server)


# --- clients -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", FORGERIES)
async def test_forged_client_token_is_401_on_upgrade(server, hub_name, case):
    token = forged(case, f"{server.endpoint}/client/hubs/{hub_name}", server.access_key)
    assert await upgrade_status(server, hub_name, token) == 401
    await assert_still_serving(server)


async def test_client_token_for_another_hub_is_401(server, hub_name):
    token = client_token(server.access_key, server.endpoint, "anotherHub")
    assert await upgrade_status(server, hub_name, token) == 401
    await assert_still_serving(server)


async def test_rest_token_used_as_client_token_is_401(server, hub_name):
    aud = server.endpoint + f"/api/hubs/{hub_name}/:send?{API}"
    token = jwt.encode({"aud": aud, "exp": int(time.time()) + 60}, server.access_key.encode(), algorithm="HS256")
    assert await upgrade_status(server, hub_name, token) == 401
    await assert_still_serving(server)


@pytest.mark.parametrize("claims", [
    {"sub": 42}, {"sub": ["a", "b"]}, {"sub": {"id": "a"}}, {"sub": True},
    {"sub": "a\r\nX-Injected: 1"}, {"sub": "a\nb"}, {"sub": "nul\x00"},
    {"role": 1}, {"role": [1, 2]}, {"role": {"webpubsub.sendToGroup": True}}, {"role": ["ok", None]},
    {"webpubsub.group": 5}, {"webpubsub.group": [["g"]]}, {"webpubsub.group": {"g": 1}},
], ids=repr)
async def test_claims_of_the_wrong_type_are_401_on_upgrade(server, hub_name, claims):
    token = client_token(server.access_key, server.endpoint, hub_name, **claims)
    assert await upgrade_status(server, hub_name, token) == 401
    await assert_still_serving(server)


async def test_generate_token_refuses_a_user_id_that_could_split_headers(server, hub_name):
    target = f"/api/hubs/{hub_name}/:generateToken?userId=a%0D%0AX-Injected%3A%201&{API}"
    token = jwt.encode({"aud": server.endpoint + target, "exp": int(time.time()) + 60}, server.access_key.encode(),
                       algorithm="HS256")
    status, body = await asyncio.to_thread(rest_call, server, target, token)
    assert status == 400 and "user id" in body["message"], body
    await assert_still_serving(server)


async def test_huge_client_token_is_refused_at_the_front_door(server, hub_name):
    head = (f"GET /client/hubs/{hub_name}?access_token={'a' * HUGE} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
    assert await asyncio.to_thread(huge_head_status, server.port, head) in (400, 414, 431)
    await assert_still_serving(server)
