"""Peer: Centrifugo, started the way the other servers are (free port, `Endpoint=` line, stdin EOF stops it).

    python -m benches.peers.centrifugo_peer --binary PATH

Centrifugo prints no connection string and reads no stdin, so this launcher writes its configuration
(benches/centrifugo.py) with a free port, starts it on the CPUs it was given itself, prints the
`Endpoint=http://127.0.0.1:PORT;` line once the port accepts connections, and stops it at stdin EOF.
The launcher then only waits: the benchmarks measure Centrifugo's own CPU and memory (it is the
launcher's one child).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..centrifugo import config
from .envelope import ready_line

READY_TIMEOUT = 30.0
POLL = 0.05
STOP_GRACE = 3.0
_PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False


def _die_with_launcher() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.peers.centrifugo_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--binary", required=True)
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="centrifugo-") as scratch:
        path = Path(scratch) / "config.json"
        path.write_text(json.dumps(config(port)))
        server = subprocess.Popen([args.binary, "--config", str(path)], stdin=subprocess.DEVNULL,
                                  stdout=sys.stderr, preexec_fn=_die_with_launcher)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not _accepts(port):
                if server.poll() is not None or time.monotonic() > deadline:
                    print(f"centrifugo: not listening on port {port} (exit code {server.poll()})", file=sys.stderr)
                    return 1
                time.sleep(POLL)
            print(ready_line(port), flush=True)
            sys.stdin.read()  # until EOF: the orchestrator is done with this server
        finally:
            server.terminate()
            try:
                server.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
