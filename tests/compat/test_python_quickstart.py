"""The seed's Python quickstart, run unchanged against `python -m fastpush serve`, on each version of the
Python server SDK in tests/compat/sdk_versions.py (test ids `[python-server-<version>]`): an older one is
put first on the programs' PYTHONPATH."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_process import ServeProcess
from tests.compat.sdk_versions import python_server_versions

PROGRAMS = Path(__file__).parent / "python"
WAIT = 20.0


class Reader:
    """Collects a process's output lines on a thread so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.lines:
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; output so far: {self.lines}")


@pytest.fixture
def serve():
    process = ServeProcess()
    yield process
    if process.proc.poll() is None:
        process.stop(signal.SIGKILL)


@pytest.fixture(params=list(python_server_versions().items()), ids=lambda pin: f"python-server-{pin[0]}")
def env(request) -> dict[str, str]:
    """The programs' environment: the SDK version's directory first on PYTHONPATH, if not the installed one."""
    version, sdk_dir = request.param
    if sdk_dir is None:
        return dict(os.environ)
    if not sdk_dir.is_dir():
        pytest.fail(f"azure-messaging-webpubsubservice {version} is not installed in {sdk_dir}: "
                    f"run `python3 -m tests.compat.install_sdks`", pytrace=False)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(sdk_dir), os.environ.get("PYTHONPATH", "")])}


def _run(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def test_quickstart_hello_world_then_sigterm_closes_clients(serve, env):
    subscriber = _run(env, str(PROGRAMS / "subscribe.py"), serve.connection_string, "myHub1")
    try:
        out = Reader(subscriber)
        out.wait_for("connected")
        publisher = subprocess.run([sys.executable, str(PROGRAMS / "publish.py"), serve.connection_string,
                                    "myHub1", "Hello World"], capture_output=True, text=True, timeout=WAIT, env=env)
        assert publisher.returncode == 0, publisher.stderr
        assert publisher.stdout.strip() == "None"
        out.wait_for("Received message: Hello World")

        assert serve.stop(signal.SIGTERM) == 0
        # The subscriber got a close frame, 1012 (service restart: SIGTERM drains), not a dropped
        # connection: the seed program (it only catches KeyboardInterrupt) ends with websockets'
        # ConnectionClosedError naming the code; 1001 is what SIGINT sends (test_sigint_... below).
        subscriber.wait(timeout=WAIT)
        output = "\n".join(out.lines)
        assert "ConnectionClosedError" in output and "1012" in output, output
    finally:
        if subscriber.poll() is None:
            subscriber.kill()


def test_sigint_exits_zero(serve):
    assert serve.stop(signal.SIGINT) == 0
