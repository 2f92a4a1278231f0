"""`fastpush serve`: parse options, start the server, print the connection string, stop on signals."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from .app import Server
from .config import ConfigError, load_config
from .devcert import ensure_dev_certificate, server_ssl_context

__all__ = ["main", "build_parser"]

DEFAULT_DEV_CERT_DIR = Path.home() / ".fastpush" / "devcert"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastpush", description="A self-hosted Azure Web PubSub.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port for WebSocket and REST (default 8080; 0 = any free port)")
    serve.add_argument("--access-key", default=os.environ.get("FASTPUSH_ACCESS_KEY"),
                       help="primary access key (default: $FASTPUSH_ACCESS_KEY, else a generated key)")
    serve.add_argument("--secondary-key", default=os.environ.get("FASTPUSH_SECONDARY_KEY"),
                       help="secondary access key, also accepted (for key rotation)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve https and wss")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--dev-cert", nargs="?", const=str(DEFAULT_DEV_CERT_DIR), metavar="DIR",
                       help=f"make (once) and use a local development CA and certificate in DIR "
                            f"(default {DEFAULT_DEV_CERT_DIR}); trust DIR/ca.pem in your clients")
    serve.add_argument("--recovery-window", type=float, default=30.0, metavar="SECONDS",
                       help="how long a reliable client's session waits for it to reconnect (default 30)")
    serve.add_argument("--replay-max-messages", type=int, default=1000,
                       help="unacknowledged messages kept per reliable client (default 1000)")
    serve.add_argument("--replay-max-bytes", type=int, default=16 * 1024 * 1024,
                       help="bytes of unacknowledged messages kept per reliable client (default 16 MiB)")
    serve.add_argument("--max-outbound-bytes", type=int, default=4 * 1024 * 1024,
                       help="bytes queued for one client before it is closed as too slow (default 4 MiB)")
    serve.add_argument("--keepalive", type=float, default=20.0, metavar="SECONDS",
                       help="ping clients quiet for this long (default 20, Azure's default)")
    serve.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="drop clients silent for this long, pings unanswered (default 60)")
    serve.add_argument("--config", metavar="FILE", help="TOML hub settings: event handlers, anonymous connect "
                                                        "(see fastpush.config)")
    serve.add_argument("--redis-url", default=os.environ.get("FASTPUSH_REDIS_URL"),
                       help="redis://host:port/db: share hubs with other nodes through this Redis (default: none, one node)")
    serve.add_argument("--workers", default="1", metavar="N",
                       help="server processes sharing the port (SO_REUSEPORT); 'auto' = one per core; "
                            "more than one needs --redis-url")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for worker processes
    serve.add_argument("--public-host", help="host name to put in the printed connection string")
    serve.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workers = (os.cpu_count() or 1) if args.workers == "auto" else _positive_int(args.workers)
    if workers is None:
        print(f"fastpush: --workers takes a positive number or 'auto', not {args.workers!r}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config) if args.config else None
    except ConfigError as exc:
        print(f"fastpush: {exc}", file=sys.stderr)
        return 2
    args.redis_url = args.redis_url or (config.redis_url if config else None)
    if workers > 1:
        if not args.redis_url:
            print("fastpush: --workers above 1 needs a broker shared by the processes: pass --redis-url "
                  "(e.g. --redis-url redis://127.0.0.1:6379)", file=sys.stderr)
            return 2
        from .workers import run_workers
        return run_workers(args, workers)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fastpush.ws.picows").setLevel(logging.WARNING)
    ssl_context = None
    if args.dev_cert:
        cert = ensure_dev_certificate(Path(args.dev_cert))
        ssl_context = server_ssl_context(cert.cert_file, cert.key_file)
        print(f"Development CA: {cert.ca_file} (export NODE_EXTRA_CA_CERTS={cert.ca_file} "
              f"REQUESTS_CA_BUNDLE={cert.ca_file} SSL_CERT_FILE={cert.ca_file})", flush=True)
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("fastpush: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        ssl_context = server_ssl_context(args.tls_cert, args.tls_key)
    server = Server(args.host, args.port, config=config, redis_url=args.redis_url, access_key=args.access_key,
                    secondary_key=args.secondary_key, ssl_context=ssl_context, public_host=args.public_host,
                    recovery_window_seconds=args.recovery_window, replay_max_messages=args.replay_max_messages,
                    replay_max_bytes=args.replay_max_bytes, max_outbound_bytes=args.max_outbound_bytes,
                    keepalive_seconds=args.keepalive, idle_timeout_seconds=args.idle_timeout,
                    reuse_port=args.reuse_port)
    uvloop.run(_serve(server))
    return 0


def _positive_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


async def _serve(server: Server) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(server.connection_string, flush=True)
    await stop.wait()
    await server.stop()
