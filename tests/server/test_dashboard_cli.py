"""`fastpush serve` prints a dashboard login URL (stdout and the log), and `fastpush dashboard`
gets another from a running server with its connection string."""
from __future__ import annotations

import signal

import pytest

from tests.cli_process import ServeProcess, run_fastpush
from tests.dashboard_client import Dashboard

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefgh"


@pytest.fixture(scope="module")
def serve():
    running = ServeProcess("--access-key", KEY)
    for _ in range(50):  # the lines after the connection string: the log line, then the URL
        line = running.proc.stdout.readline()
        running.output.append(line)
        if line.startswith("Dashboard: ") or not line:
            break
    yield running
    running.stop(signal.SIGINT)


def endpoint(serve: ServeProcess) -> str:
    return serve.connection_string.split(";")[0].split("=", 1)[1]


def test_the_printed_login_url_logs_in_once(serve):
    printed = [line for line in serve.output if line.startswith("Dashboard: ")]
    assert len(printed) == 1
    url = printed[0].split(" ", 1)[1].strip()
    assert url.startswith(endpoint(serve) + "/dashboard/login?token=")
    logged = [line for line in serve.output if "fastpush.dashboard" in line and url in line]
    assert logged and "works once, within 15 minutes" in logged[0]
    user = Dashboard(endpoint(serve))
    assert user.login(url).status == 200
    assert user.get("api/hubs").status == 200
    assert Dashboard(endpoint(serve)).login(url).status == 401


def test_fastpush_dashboard_prints_a_new_login_url(serve):
    printed = run_fastpush("dashboard", "--connection-string", serve.connection_string)
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith(endpoint(serve) + "/dashboard/login?token=")
    assert Dashboard(endpoint(serve)).login(url).status == 200


def test_fastpush_dashboard_with_a_wrong_key_says_why(serve):
    wrong = serve.connection_string.replace(KEY, "Z" * 44)
    printed = run_fastpush("dashboard", "--connection-string", wrong)
    assert printed.returncode == 2
    assert printed.stderr.startswith("fastpush: the server answered 401") and "signature" in printed.stderr.lower()
