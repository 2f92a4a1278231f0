"""Defect 10: every reason `fastpush serve` cannot start is one line on stderr and exit code 2, and a
second server or cluster on a port already served is refused instead of splitting its clients."""
from __future__ import annotations

import http.client
import signal
import socket
import time

import jwt
import pytest

from tests.cli_process import Finished, ServeProcess, run_fastpush
from tests.conftest import ACCESS_KEY

pytestmark = pytest.mark.timeout(120)


def assert_refused(result: Finished, *words: str) -> str:
    """Exit code 2, exactly one line on stderr ("fastpush: ..."), no traceback anywhere."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastpush: "), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(*args: str) -> Finished:
    return run_fastpush("serve", "--port", "0", *args)


def port_of(process: ServeProcess) -> int:
    return int(process.connection_string.split(";")[0].rsplit(":", 1)[1])


def rest_status(port: int, key: str) -> int:
    """Status of a signed REST send to the server on port (202 when the key is that server's)."""
    endpoint = f"http://127.0.0.1:{port}"
    target = "/api/hubs/startup/:send?api-version=2024-12-01"
    token = jwt.encode({"aud": endpoint + target, "exp": int(time.time()) + 60}, key.encode(), algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", target, body=b"hi", headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "text/plain"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_redis_down_is_one_line(workers):
    port = free_port()
    line = assert_refused(serve("--workers", workers, "--redis-url", f"redis://127.0.0.1:{port}"),
                          "Redis", f"127.0.0.1:{port}")
    assert "--redis-url" in line


def test_redis_url_that_is_not_redis():
    assert_refused(serve("--redis-url", "http://127.0.0.1:6379"), "--redis-url")


def test_port_served_by_a_plain_server_is_refused(redis_server):
    first = ServeProcess(env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    try:
        port = str(port_of(first))
        assert_refused(serve("--port", port), "already in use", port)
        assert_refused(serve("--port", port, "--workers", "2", "--redis-url", redis_server.url), "already in use")
        assert rest_status(int(port), ACCESS_KEY) == 202
    finally:
        first.stop(signal.SIGTERM)


def test_port_served_by_workers_is_refused(redis_server):
    """Workers bind with SO_REUSEPORT, which another cluster's workers could join silently."""
    first = ServeProcess("--workers", "2", "--redis-url", redis_server.url, env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    try:
        port = str(port_of(first))
        other_key = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210ZYXWVUT"
        assert_refused(serve("--port", port, "--workers", "2", "--redis-url", redis_server.url,
                             "--access-key", other_key), "already in use", port)
        assert_refused(serve("--port", port), "already in use", port)
        # every client still reaches the first cluster: no call answered by a stranger with another key
        assert [rest_status(int(port), ACCESS_KEY) for _ in range(20)] == [202] * 20
    finally:
        assert first.stop(signal.SIGTERM) == 0


def test_missing_tls_file_is_named(tmp_path):
    missing = tmp_path / "nope.pem"
    assert_refused(serve("--tls-cert", str(missing), "--tls-key", str(missing)), str(missing), "--tls-cert")


def test_tls_file_that_is_not_pem(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert_refused(serve("--tls-cert", str(junk), "--tls-key", str(junk)), str(junk))


def test_dev_cert_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_refused(serve("--dev-cert", str(blocker / "certs")), "--dev-cert", str(blocker / "certs"))


BAD_OPTIONS = [
    (["--log-level", "verbose"], ["--log-level", "verbose"]),
    (["--port", "99999"], ["--port", "99999"]),
    (["--port", "-1"], ["--port"]),
    (["--workers", "0"], ["--workers"]),
    (["--workers", "many"], ["--workers"]),
    (["--recovery-window", "0"], ["--recovery-window"]),
    (["--keepalive", "-5"], ["--keepalive"]),
    (["--idle-timeout", "nan"], ["--idle-timeout"]),
    (["--replay-max-messages", "0"], ["--replay-max-messages"]),
    (["--replay-max-bytes", "-1"], ["--replay-max-bytes"]),
    (["--max-outbound-bytes", "0"], ["--max-outbound-bytes"]),
    (["--max-message-bytes", "0"], ["--max-message-bytes"]),
    (["--max-body-bytes", "-1"], ["--max-body-bytes"]),
    (["--max-groups-per-connection", "0"], ["--max-groups-per-connection"]),
    (["--max-connections", "0"], ["--max-connections"]),
    (["--max-connections-per-ip", "-3"], ["--max-connections-per-ip"]),
    (["--request-timeout", "0"], ["--request-timeout"]),
    (["--http-keepalive-timeout", "-1"], ["--http-keepalive-timeout"]),
    (["--max-upstream-connections", "0"], ["--max-upstream-connections"]),
    (["--max-upstream-waiting", "0"], ["--max-upstream-waiting"]),
    (["--max-body-bytes", "1.5"], ["--max-body-bytes"]),
    (["--tls-cert", "cert.pem"], ["--tls-key"]),
]


@pytest.mark.parametrize("args,words", BAD_OPTIONS, ids=[" ".join(args) for args, _ in BAD_OPTIONS])
def test_bad_option_is_one_line(args, words):
    assert_refused(serve(*args), *words)


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid", "192.0.2.1"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_host_this_machine_cannot_listen_on(host, workers, redis_server):
    assert_refused(serve("--host", host, "--workers", workers, "--redis-url", redis_server.url), host, "--host")


def test_config_that_cannot_be_read(tmp_path):
    assert_refused(serve("--config", str(tmp_path / "missing.toml")), "missing.toml")
    assert_refused(serve("--config", str(tmp_path)), str(tmp_path))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert_refused(serve("--config", str(binary)), str(binary))

