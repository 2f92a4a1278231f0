"""/metrics is never open to a caller without the access key on the public port: each refusal is a
401 saying why (a JWT, even one signed with the key, included), with no metric in it. The
separate --metrics-address listener answers /metrics without a key and nothing else: no REST
call, no WebSocket, no more than its own socket cap, and on loopback when given a port alone."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
import websockets

from fastpush.cli import build_parser
from fastpush.metrics.endpoint import MAX_METRICS_CONNECTIONS
from fastpush.workers import _metrics_address
from tests.cli_process import ServeProcess, run_fastpush
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_V1, client_url, connect
from tests.metrics_client import get, parse
from tests.security.conftest import assert_still_serving

SECONDARY = "SECONDARYKEYSECONDARYKEYSECONDARYKEY01234567"


def _rest_token(url: str, key: str = ACCESS_KEY) -> str:
    """What an SDK would send for a REST call to `url`: a valid JWT signed with the key."""
    return jwt.encode({"aud": url, "exp": int(time.time()) + 300}, key.encode(), algorithm="HS256")


def _refusals(url: str) -> list[tuple[str | None, str]]:
    """(Authorization header, words the 401 must say) for every way of not presenting a key."""
    basic = base64.b64encode(f"user:{ACCESS_KEY}".encode()).decode()
    return [
        (None, "Missing 'Authorization: Bearer <access key>'"),
        (f"Basic {basic}", "must be 'Bearer <access key>'"),
        ("Bearer", "must be 'Bearer <access key>'"),
        ("Bearer    ", "must be 'Bearer <access key>'"),
        (ACCESS_KEY, "must be 'Bearer <access key>'"),  # no scheme at all
        ("Bearer wrong-key", "not an access key"),
        (f"Bearer {ACCESS_KEY[:-1]}", "not an access key"),  # a prefix
        (f"Bearer {ACCESS_KEY}A", "not an access key"),  # a longer one
        (f"Bearer {ACCESS_KEY.lower()}", "not an access key"),
        (f"Bearer {SECONDARY}", "not an access key"),  # a key of no key ring here
        (f"Bearer {_rest_token(url)}", "not a JWT"),  # signed with the very key: still not the key
        (f"Bearer {_rest_token(url, 'another-key-long-enough-for-hs256-0123456789')}", "not a JWT"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "not a JWT"),
    ]


async def test_every_refusal_on_the_public_port_is_a_401_with_its_reason(make_server):
    server = make_server()
    url = server.endpoint + "/metrics"
    for authorization, reason in _refusals(url):
        answer = await asyncio.to_thread(get, url, authorization)
        assert answer.status == 401, (authorization, answer)
        body = json.loads(answer.body)
        assert body["code"] == "Unauthorized" and reason in body["message"], (authorization, body)
        assert answer.headers["www-authenticate"] == 'Bearer realm="fastpush metrics"'
        assert "fastpush_" not in answer.body
    await assert_still_serving(server)


async def test_other_methods_are_refused_without_the_key_too(make_server):
    server = make_server()
    url = server.endpoint + "/metrics"
    for method in ("POST", "PUT", "DELETE"):
        assert (await asyncio.to_thread(get, url, None, method)).status == 401
        answer = await asyncio.to_thread(get, url, f"Bearer {ACCESS_KEY}", method)
        assert answer.status == 405 and answer.headers["allow"] == "GET, HEAD"


async def test_either_access_key_is_accepted(make_server):
    server = make_server(secondary_key=SECONDARY)
    url = server.endpoint + "/metrics"
    for authorization in (f"Bearer {ACCESS_KEY}", f"bearer {SECONDARY}", f"  BEARER   {ACCESS_KEY}  "):
        answer = await asyncio.to_thread(get, url, authorization)
        assert answer.status == 200, answer
        assert ("fastpush_broker_up", frozenset({("broker", "memory")})) in parse(answer.body)
    head = await asyncio.to_thread(get, url, f"Bearer {ACCESS_KEY}", "HEAD")
    assert head.status == 200 and head.body == ""


async def test_the_metrics_listener_answers_metrics_only(make_server):
    server = make_server(metrics_address=("127.0.0.1", 0))
    host, port = server.server.metrics_address
    base = f"http://{host}:{port}"
    assert host == "127.0.0.1" and port != server.port
    scraped = await asyncio.to_thread(get, base + "/metrics")
    assert scraped.status == 200 and parse(scraped.body)
    listener = await connect(server, "h", JSON_V1)  # on the public port: must hear nothing below
    # The REST API is not reachable through the metrics listener, even with a valid token.
    send = f"{base}/api/hubs/h/:send?api-version=2024-01-01"
    request_send = await asyncio.to_thread(_post, send, _rest_token(send))
    assert request_send == 404
    assert (await asyncio.to_thread(get, base + "/api/health")).status == 404
    assert (await asyncio.to_thread(get, base + "/metrics/")).status == 404
    # Nor is the WebSocket endpoint, even with a valid client token.
    token_url = client_url(server, "h").replace(f":{server.port}/", f":{port}/")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(token_url)
    assert refused.value.response.status_code == 404
    await listener.expect_silence(0.3)
    await listener.close()
    await assert_still_serving(server)


def _post(url: str, token: str) -> int:
    request = urllib.request.Request(url, data=b"hi", method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_the_metrics_listener_caps_its_sockets(make_server):
    server = make_server(metrics_address=("127.0.0.1", 0))
    address = server.server.metrics_address
    held = [socket.create_connection(address) for _ in range(MAX_METRICS_CONNECTIONS)]
    try:
        extra = socket.create_connection(address)
        extra.settimeout(10)
        answer = b""
        while chunk := extra.recv(4096):  # refused: a 503 (or a bare close), never served
            answer += chunk
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
        extra.close()
    finally:
        for sock in held:
            sock.close()

    async def served() -> bool:
        return (await asyncio.to_thread(get, f"http://{address[0]}:{address[1]}/metrics")).status == 200
    deadline = time.monotonic() + 10
    while not await served():
        assert time.monotonic() < deadline, "the listener did not serve again once the sockets closed"
        await asyncio.sleep(0.05)
    await assert_still_serving(server)


def _listening_hosts(pid: int, port: int) -> set[str]:
    """The local addresses the process listens on at `port` (from /proc/PID/net/tcp and tcp6)."""
    hosts = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    hosts.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    hosts.add(socket.inet_ntop(socket.AF_INET6, words))
    return hosts


def _metrics_line(serve: ServeProcess) -> tuple[str, int]:
    line = next(line for line in serve.output if "metrics on http://" in line)
    host_port = line.split("metrics on http://", 1)[1].split("/metrics", 1)[0]
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def test_a_port_alone_listens_on_loopback_only():
    serve = ServeProcess("--metrics-address", "0", env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    try:
        host, port = _metrics_line(serve)
        assert host == "127.0.0.1"
        assert _listening_hosts(serve.proc.pid, port) == {"127.0.0.1"}
        assert get(f"http://127.0.0.1:{port}/metrics").status == 200
    finally:
        serve.stop(2)


@pytest.mark.parametrize("flag, env, config, expected", [
    ("127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0", "127.0.0.1"),
    (None, "127.0.0.2:0", "127.0.0.3:0", "127.0.0.2"),
    (None, None, "127.0.0.3:0", "127.0.0.3"),
])
def test_the_option_wins_over_the_variable_over_the_config_file(tmp_path, flag, env, config, expected):
    path = tmp_path / "fastpush.toml"
    path.write_text(f'metricsAddress = "{config}"\n')
    args = ["--config", str(path), *(["--metrics-address", flag] if flag else [])]
    variables = {"FASTPUSH_ACCESS_KEY": ACCESS_KEY, **({"FASTPUSH_METRICS_ADDRESS": env} if env else {})}
    serve = ServeProcess(*args, env=variables)
    try:
        assert _metrics_line(serve)[0] == expected
    finally:
        serve.stop(2)


@pytest.mark.parametrize("value, words", [
    ("abc", "is not PORT or HOST:PORT"),
    ("70000", "is not PORT or HOST:PORT"),
    ("127.0.0.1:", "is not PORT or HOST:PORT"),
    ("::1:9100", "IPv6 address in brackets"),
    ("192.0.2.1:0", "is not an address of this machine"),
])
def test_a_bad_metrics_address_is_one_line_and_exit_code_2(value, words):
    done = run_fastpush("serve", "--port", "0", "--metrics-address", value, timeout=30,
                        env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastpush: --metrics-address: ") and words in lines[0], lines


def test_a_metrics_port_in_use_is_refused_at_start():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        done = run_fastpush("serve", "--port", "0", "--metrics-address", str(port), timeout=30,
                            env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
        assert done.returncode == 2
        assert done.stderr.strip() == (f"fastpush: --metrics-address: cannot listen on 127.0.0.1:{port}: the port is "
                                       f"already in use (another fastpush or another program); stop it or choose "
                                       f"another --metrics-address")
    finally:
        taken.close()


@pytest.mark.parametrize("given, per_worker", [
    ("127.0.0.1:9100", ["127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9102"]),
    ("9100", ["127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9102"]),
    ("[::1]:9100", ["[::1]:9100", "[::1]:9101", "[::1]:9102"]),
    ("0.0.0.0:0", ["0.0.0.0:0"] * 3),
])
def test_each_worker_gets_a_metrics_port_of_its_own(given, per_worker, monkeypatch):
    monkeypatch.delenv("FASTPUSH_METRICS_ADDRESS", raising=False)
    args = build_parser().parse_args(["serve", "--metrics-address", given])
    assert [_metrics_address(args, i) for i in range(3)] == [["--metrics-address", a] for a in per_worker]
    assert _metrics_address(build_parser().parse_args(["serve"]), 0) == []
