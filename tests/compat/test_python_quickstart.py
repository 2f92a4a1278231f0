"""The seed's Python quickstart, run unchanged against `python -m fastpush serve`."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_process import ServeProcess

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


def _run(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_quickstart_hello_world_then_sigterm_closes_clients(serve):
    subscriber = _run(str(PROGRAMS / "subscribe.py"), serve.connection_string, "myHub1")
    try:
        out = Reader(subscriber)
        out.wait_for("connected")
        publisher = subprocess.run([sys.executable, str(PROGRAMS / "publish.py"), serve.connection_string,
                                    "myHub1", "Hello World"], capture_output=True, text=True, timeout=WAIT)
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
