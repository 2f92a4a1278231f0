"""The `serve` limit flags reach the Server (and every worker), and `--version` says the version."""
from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from fastpush import Server
from fastpush.cli import build_parser, server_options
from fastpush.workers import PASSED_AS_GIVEN, _passed_on
from tests.cli_process import run_fastpush
from tests.conftest import ACCESS_KEY

# flag, value given, Server attribute(s) it must set
FLAGS = [
    ("--max-message-bytes", "2048", {"max_message_bytes": 2048}),
    ("--max-body-bytes", "4096", {"max_body_bytes": 4096}),
    ("--max-groups-per-connection", "7", {"max_groups_per_connection": 7}),
    ("--max-streams-per-connection", "5", {"max_streams_per_connection": 5}),
    ("--max-stream-bytes", "4096", {"max_stream_bytes": 4096}),
    ("--max-connections", "321", {"max_connections": 321}),
    ("--max-connections-per-ip", "9", {"max_connections_per_ip": 9}),
    ("--request-timeout", "2.5", {"request_head_timeout_seconds": 2.5, "request_body_timeout_seconds": 2.5}),
    ("--http-keepalive-timeout", "11", {"http_keepalive_timeout_seconds": 11.0}),
    ("--max-upstream-connections", "3", {"max_upstream_connections": 3}),
    ("--max-upstream-waiting", "5", {"max_upstream_waiting": 5}),
]

DEFAULTS = {"max_message_bytes": 1024 * 1024, "max_body_bytes": 1024 * 1024, "max_groups_per_connection": 1000,
            "max_connections": None, "max_connections_per_ip": 1000, "request_head_timeout_seconds": 60.0,
            "request_body_timeout_seconds": 60.0, "http_keepalive_timeout_seconds": 75.0,
            "max_upstream_connections": 64, "max_upstream_waiting": 256, "max_streams_per_connection": 64,
            "max_stream_bytes": 64 * 1024 * 1024}

# serve options a worker does not get as given: the parent decides them (metrics_address: each
# worker its own port), or they travel another way
NOT_PASSED_AS_GIVEN = {"help", "host", "port", "workers", "reuse_port", "redis_url", "access_key", "access_key_file",
                       "secondary_key", "tls_cert", "tls_key", "dev_cert", "metrics_address"}


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize("flag,value,expected", FLAGS, ids=[flag for flag, _, _ in FLAGS])
def test_flag_reaches_the_server(flag, value, expected):
    server = Server(**server_options(serve_args(flag, value)))
    assert {name: getattr(server, name) for name in expected} == expected


def test_defaults_reach_the_server():
    server = Server(**server_options(serve_args()))
    assert {name: getattr(server, name) for name in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("flag", [flag for flag, _, _ in FLAGS])
@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_flag_refuses_what_is_not_positive(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve_args(flag, value)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastpush: ") and flag in lines[0], lines


def test_every_worker_gets_every_option():
    """Workers rebuild their argv from the parent's options: none may be lost on the way."""
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    dests = {action.dest for action in commands.choices["serve"]._actions}
    assert dests - NOT_PASSED_AS_GIVEN == set(PASSED_AS_GIVEN)
    given = ["--log-level", "debug", "--log-format", "json", "--recovery-window", "5", "--replay-max-messages", "6",
             "--replay-max-bytes", "7", "--max-outbound-bytes", "8", "--keepalive", "9", "--idle-timeout", "10",
             "--config", "hubs.toml", "--drain-timeout", "12", "--broker-loss-timeout", "13",
             "--public-host", "push.example"] + [part for flag, value, _ in FLAGS for part in (flag, value)]
    parent = serve_args(*given)
    worker = serve_args(*_passed_on(parent, None))
    assert {dest: getattr(worker, dest) for dest in PASSED_AS_GIVEN} == \
           {dest: getattr(parent, dest) for dest in PASSED_AS_GIVEN}
    assert all(getattr(parent, dest) != getattr(serve_args(), dest) for dest in PASSED_AS_GIVEN)


def test_version():
    result = run_fastpush("--version", timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"fastpush {version('fastpush')}\n", "")


def test_serve_raises_its_soft_open_file_limit_to_the_hard_one():
    """Started with the usual soft limit of 1,024, `fastpush serve` takes every descriptor the hard
    limit allows (else --max-connections' default would cap it near 900 clients)."""
    import resource
    import signal

    from tests.cli_process import ServeProcess

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 1024:
        pytest.skip(f"the hard open-file limit here is {hard}: nothing to raise")
    process = ServeProcess(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    try:
        with open(f"/proc/{process.proc.pid}/limits") as proc_limits:
            limits = proc_limits.read()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        process.stop(signal.SIGTERM)


def test_the_drain_timeout_comes_from_the_flag_then_the_variable_then_the_config_file(tmp_path, monkeypatch):
    from fastpush.app import DRAIN_TIMEOUT_SECONDS
    from fastpush.cli import _drain_timeout
    from fastpush.config import load_config

    path = tmp_path / "fastpush.toml"
    path.write_text("drainTimeoutSeconds = 40\n")
    config = load_config(path)
    monkeypatch.delenv("FASTPUSH_DRAIN_TIMEOUT", raising=False)
    assert (_drain_timeout(None, None), _drain_timeout(None, config)) == (DRAIN_TIMEOUT_SECONDS, 40.0)
    monkeypatch.setenv("FASTPUSH_DRAIN_TIMEOUT", "7.5")
    assert (_drain_timeout(None, config), _drain_timeout(3.0, config)) == (7.5, 3.0)


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf", "soon"])
def test_a_drain_timeout_that_is_not_a_positive_number_stops_the_start(value, tmp_path):
    result = run_fastpush("serve", "--port", "0", env={"FASTPUSH_DRAIN_TIMEOUT": value}, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("fastpush: $FASTPUSH_DRAIN_TIMEOUT:"), result.stderr
    path = tmp_path / "fastpush.toml"
    toml_value = '"soon"' if value == "soon" else value
    path.write_text(f"drainTimeoutSeconds = {toml_value}\n")
    result = run_fastpush("serve", "--port", "0", "--config", str(path), timeout=30)
    assert result.returncode == 2 and "drainTimeoutSeconds" in result.stderr, result.stderr


def test_the_broker_loss_timeout_comes_from_the_flag_then_the_config_file(tmp_path, monkeypatch):
    from fastpush.app import BROKER_LOSS_TIMEOUT_SECONDS
    from fastpush.config import load_config

    path = tmp_path / "fastpush.toml"
    path.write_text("brokerLossTimeoutSeconds = 40\n")
    config = load_config(path)

    def chosen(*argv: str, config=None) -> float:
        return Server(**server_options(serve_args(*argv), config=config)).broker_loss_timeout_seconds

    assert chosen() == BROKER_LOSS_TIMEOUT_SECONDS
    assert chosen(config=config) == 40.0
    assert chosen("--broker-loss-timeout", "7.5", config=config) == 7.5
    # What a worker is started with when the parent read the file: the value, as the flag.
    from fastpush import cli

    started: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "run_workers", lambda args, count, tls: started.append(args) or 0)
    assert cli.main(["serve", "--port", "0", "--workers", "2", "--redis-url", "redis://127.0.0.1:1",
                     "--access-key", ACCESS_KEY, "--config", str(path)]) == 0
    worker_argv = _passed_on(started[0], None)
    assert worker_argv[worker_argv.index("--broker-loss-timeout") + 1] == "40.0"


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf", "3600.5", "1e9", "soon"])
def test_a_broker_loss_timeout_out_of_its_bounds_is_refused_by_flag_and_file(value, tmp_path, capsys):
    from fastpush.config import ConfigError, load_config

    with pytest.raises(SystemExit) as exit_info:
        serve_args("--broker-loss-timeout", value)
    assert exit_info.value.code == 2
    assert "--broker-loss-timeout" in capsys.readouterr().err
    path = tmp_path / "fastpush.toml"
    toml_value = '"soon"' if value == "soon" else value
    path.write_text(f"brokerLossTimeoutSeconds = {toml_value}\n")
    with pytest.raises(ConfigError, match="brokerLossTimeoutSeconds"):
        load_config(path)


def test_a_broker_loss_timeout_at_its_limit_is_taken(tmp_path):
    from fastpush.config import BROKER_LOSS_TIMEOUT_LIMIT, load_config

    assert serve_args("--broker-loss-timeout", "3600").broker_loss_timeout == BROKER_LOSS_TIMEOUT_LIMIT
    path = tmp_path / "fastpush.toml"
    path.write_text("brokerLossTimeoutSeconds = 3600\n")
    assert load_config(path).broker_loss_timeout_seconds == BROKER_LOSS_TIMEOUT_LIMIT
