"""`fastpush serve --workers N`: N server processes on one port (SO_REUSEPORT), sharing a Redis
broker, so one machine uses all its cores. The parent only starts, watches and stops them."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from .auth.tokens import generate_access_key
from .devcert import ensure_dev_certificate

__all__ = ["run_workers"]

STARTUP_SECONDS = 30.0


def run_workers(args: argparse.Namespace, count: int) -> int:
    port = args.port or _free_port(args.host)
    env = dict(os.environ, FASTPUSH_ACCESS_KEY=args.access_key or generate_access_key())
    if args.secondary_key:
        env["FASTPUSH_SECONDARY_KEY"] = args.secondary_key
    # -P: no current directory on sys.path, so a source checkout there cannot shadow the install.
    command = [sys.executable, "-P", "-m", "fastpush", "serve", "--workers", "1", "--reuse-port", "--host", args.host,
               "--port", str(port), "--redis-url", args.redis_url, *_passed_on(args)]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    lines = [_connection_string(child) for child in children]
    if any(line is None for line in lines):
        stop(None, None)
        print("fastpush: a worker failed to start", file=sys.stderr)
        return 1
    print(f"{count} workers on port {port}, sharing {args.redis_url}", file=sys.stderr, flush=True)
    print(lines[0], flush=True)
    codes = [child.wait() for child in children]
    if not stopping.is_set():  # a worker died on its own: stop the others, report failure
        stop(None, None)
        return 1
    return 0 if all(code == 0 for code in codes) else 1


def _connection_string(child: subprocess.Popen) -> str | None:
    for line in child.stdout:
        if line.startswith("Endpoint="):
            threading.Thread(target=_forward, args=(child.stdout,), daemon=True).start()
            return line.strip()
    return None


def _forward(stream) -> None:
    for line in stream:
        sys.stdout.write(line)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The options every worker gets as given (keys travel in the environment, not argv)."""
    passed = ["--log-level", args.log_level, "--recovery-window", str(args.recovery_window),
              "--replay-max-messages", str(args.replay_max_messages), "--replay-max-bytes", str(args.replay_max_bytes),
              "--max-outbound-bytes", str(args.max_outbound_bytes), "--keepalive", str(args.keepalive),
              "--idle-timeout", str(args.idle_timeout)]
    if args.dev_cert:
        cert = ensure_dev_certificate(Path(args.dev_cert))
        passed += ["--tls-cert", str(cert.cert_file), "--tls-key", str(cert.key_file)]
        print(f"Development CA: {cert.ca_file}", flush=True)
    elif args.tls_cert:
        passed += ["--tls-cert", args.tls_cert, "--tls-key", args.tls_key]
    for flag, value in (("--config", args.config), ("--public-host", args.public_host)):
        if value:
            passed += [flag, value]
    return passed
