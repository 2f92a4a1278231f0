"""Run `python -m fastpush serve` as a real process and read its connection string."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT = 20.0


class ServeProcess:
    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "fastpush", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
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
