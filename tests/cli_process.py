"""Run fastpush as a real process: `ServeProcess` (a server to use, with its connection string) or
`run_fastpush` (a command that must exit by itself, e.g. a start that must fail)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT = 20.0


class ServeProcess:
    def __init__(self, *args: str, env: dict | None = None, preexec=None, prefix: tuple[str, ...] = ()):
        """`preexec` runs in the child before fastpush starts (e.g. to lower a resource limit);
        `prefix` is the command that runs it (e.g. `ip netns exec NAME`)."""
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "fastpush", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                                     preexec_fn=preexec)
        self.output: list[str] = []
        self.connection_string = self._read_connection_string()

    def _read_connection_string(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("Endpoint="):
                return line.strip()
        self.proc.kill()
        raise AssertionError("fastpush serve printed no connection string:\n" + "".join(self.output))

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


class WatchedServe(ServeProcess):
    """A ServeProcess whose later output (stdout and stderr) a thread keeps reading, so a busy log
    never fills the pipe, and a test can wait for a line."""

    def __init__(self, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
        super().__init__(*args, env=env, prefix=prefix)
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="serve-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.output.append(line)
                self._changed.notify_all()

    def lines(self) -> list[str]:
        with self._changed:
            return list(self.output)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first line matching the regular expression `pattern` (searched), waiting for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.output:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matches {pattern!r} after {timeout} s:\n" + "".join(self.output))
                self._changed.wait(left)


class Finished:
    """What a `python -m fastpush` run that ended printed, and its exit code."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_fastpush(*args: str, timeout: float = 45.0, env: dict | None = None) -> Finished:
    """Run `python -m fastpush ARGS` until it exits (for commands that must stop by themselves).

    It runs in its own process group, so worker processes it started die with it on a timeout."""
    proc = subprocess.Popen([sys.executable, "-m", "fastpush", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"fastpush {' '.join(args)} was still running after {timeout} s:\n{stdout}{stderr}") from expired
    return Finished(proc.returncode, stdout, stderr)
