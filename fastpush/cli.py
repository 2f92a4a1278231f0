"""`fastpush serve`: parse options, start the server, print the connection string, stop on signals.
`fastpush token`, `send` and `status`: a client URL, a REST send and the health of a running
server, from its connection string, as the Azure portal and the SDKs would.

Every reason a command cannot run is one line on stderr ("fastpush: ...") and exit code 2.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import resource
import shlex
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn, TypedDict, TypeVar
from urllib.parse import quote, urlsplit

import jwt
import msgspec
import uvloop

from .app import BROKER_LOSS_TIMEOUT_SECONDS, DRAIN_TIMEOUT_SECONDS, MAX_MESSAGE_BYTES, Server, client_access_url
from .auth.tokens import KeyRing
from .broker.redis.link import describe_url
from .broker.redis.sentinel import SCHEME as SENTINEL_SCHEME
from .broker.redis.sentinel import Sentinels
from .broker.redis.wire import OtherWireVersion
from .broker.resp import RedisAddress
from .config import (
    BROKER_LOSS_TIMEOUT_LIMIT,
    Config,
    ConfigError,
    broker_loss_timeout_error,
    ignored_settings,
    load_config,
)
from .dashboard.access import LOGIN_TOKEN_SECONDS
from .devcert import DevCertificate, ensure_dev_certificate, server_ssl_context
from .http.rest import MAX_BODY_BYTES
from .keyfile import read_or_create_access_key
from .logs import LOG_FORMATS, configure_logging
from .permissions import RoleError, check_roles
from .protocol.names import group_error, hub_error, is_valid_group, is_valid_hub, is_valid_user, user_error
from .startup import STARTUP_SECONDS, StartupError, close_all, listen_error, parse_address, reason, reserve_port
from .workers import DRAINING_LINE, run_workers

__all__ = ["main", "build_parser", "server_options", "ServerOptions", "StartupError", "reserve_port", "close_all"]

DEFAULT_DEV_CERT_DIR = Path.home() / ".fastpush" / "devcert"
ACCESS_KEY_VARIABLE = "FASTPUSH_ACCESS_KEY"
METRICS_VARIABLE = "FASTPUSH_METRICS_ADDRESS"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
API_VERSION = "2024-01-01"
REST_TOKEN_SECONDS = 300  # lifetime of the token `fastpush send` signs for its one request
HTTP_SECONDS = 30.0  # how long `send` and `status` wait for the server
_N = TypeVar("_N", int, float)


SERVE_EPILOG = f"""\
environment:
  {ACCESS_KEY_VARIABLE}     the primary access key, when --access-key is not given
                          (refused with --access-key-file)
  FASTPUSH_SECONDARY_KEY  the secondary access key, when --secondary-key is not given
  FASTPUSH_REDIS_URL      the Redis URL, when --redis-url is not given (wins over the config file)
  FASTPUSH_DRAIN_TIMEOUT  seconds, when --drain-timeout is not given (wins over the config file)
  FASTPUSH_METRICS_ADDRESS
                          the metrics listener's [HOST:]PORT, when --metrics-address is not
                          given (wins over the config file)
  FASTPUSH_NO_EXTENSIONS  which fan-out runs: unset = the compiled one if it is built, else the
                          pure-Python one with a warning; 0 = the compiled one or an error;
                          1 = the pure-Python one
  (FASTPUSH_CONNECTION_STRING is for `fastpush token`, `send`, `status` and `dashboard`, not serve)

dashboard: at /dashboard on the same port; log in with the one-time URL printed at start (it works
  once, within 15 minutes), or one `fastpush dashboard` prints. Not served by --workers processes.

config file (--config FILE, TOML; Azure's hub setting names, every one of them; other keys are refused):
  upstreamTimeoutSeconds = 20           # seconds per event handler call (default 20)
  redisUrl = "redis://127.0.0.1:6379"   # as --redis-url (the option and the variable win);
                                        # or "redis+sentinel://h1:26379,h2:26379/mymaster"
  drainTimeoutSeconds = 25              # as --drain-timeout (the option and the variable win)
  metricsAddress = "127.0.0.1:9100"     # as --metrics-address (the option and the variable win)

  [hubs.chat]                           # one table per hub (here: chat)
  anonymousConnectPolicy = "deny"       # or "allow": clients may connect without a token
  webSocketKeepAliveIntervalInSeconds = 20   # 1-120: ping quiet clients (default: --keepalive)
  lastValueGroups = ["prices.*"]        # fastpush's own: joiners of these groups get the latest first
  lastValueDepth = 1                    # 1-100 messages per group
  lastValueMaxGroups = 10000            # groups kept per hub (1-1000000)
  lastValueMaxBytes = 67108864          # bytes kept per hub (at most 1 GiB)
  conflateGroups = ["prices.*"]         # fastpush's own: slow readers get the latest per group, not a backlog
  maxMessagesPerSecond = 10             # fastpush's own: at most this many per connection per group

  [[hubs.chat.eventHandlers]]           # in order; the first that matches an event gets it
  urlTemplate = "http://127.0.0.1:3000/api/webpubsub/hubs/{{hub}}/{{event}}"
  userEventPattern = "*"                # "*", "a,b" or "" (no user events); case-insensitive
  systemEvents = ["connect", "connected", "disconnected"]
  groupPresenceEvents = {{ eventNames = ["joined", "left"], groupFilters = ["chat.**"] }}
  # auth = {{ type = "ManagedIdentity", managedIdentity = {{ resource = "..." }} }}   # accepted, ignored
  # accepted and ignored, with a warning at start (Event Hubs, the Chat preview):
  # [[hubs.chat.eventListeners]]
  # filter = {{ type = "EventName", systemEvents = ["connected"], userEventPattern = "*" }}
  # endpoint = {{ type = "EventHub", fullyQualifiedNamespace = "x.servicebus.windows.net", eventHubName = "h" }}
  # [hubs.chat.chat]
  # mode = "Enabled"
  # persistentStorage = {{ id = "..." }}

More in docs/operations.md in the fastpush repository: TLS, proxies, workers, health, logs.
"""


class _Parser(argparse.ArgumentParser):
    """Option mistakes are one line on stderr and exit code 2, like every other startup failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fastpush: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 = any free port)")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _broker_loss_seconds(text: str) -> float:
    value = _number(text, float)
    error = broker_loss_timeout_error(value)
    if error is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {error}")
    return value


def _number(text: str, kind: Callable[[str], _N]) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _worker_count(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"takes a positive number or 'auto', not {text!r}") from None


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a level (one of {', '.join(LOG_LEVELS)})")
    return text.upper()


def _version() -> str:
    try:
        return version("fastpush")
    except PackageNotFoundError:  # a source tree that was never installed
        return "(version unknown: not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastpush", description="A self-hosted Azure Web PubSub.",
                     epilog="`fastpush COMMAND --help` tells each command's options and environment variables.")
    parser.add_argument("--version", action="version", version=f"fastpush {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server", epilog=SERVE_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080,
                       help="port for WebSocket and REST (default 8080; 0 = any free port)")
    key = serve.add_mutually_exclusive_group()
    key.add_argument("--access-key-file", metavar="PATH",
                     help="read the primary access key from PATH; if there is no such file, generate a key and "
                          "write it there (mode 0600), so restarts keep it")
    key.add_argument("--access-key", default=os.environ.get(ACCESS_KEY_VARIABLE),
                     help="primary access key, visible in process listings: prefer --access-key-file or "
                          f"${ACCESS_KEY_VARIABLE} (default: ${ACCESS_KEY_VARIABLE}, else a key generated at "
                          "each start)")
    serve.add_argument("--secondary-key", default=os.environ.get("FASTPUSH_SECONDARY_KEY"),
                       help="secondary access key, also accepted, for key rotation (default: $FASTPUSH_SECONDARY_KEY)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve https and wss")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--dev-cert", nargs="?", const=str(DEFAULT_DEV_CERT_DIR), metavar="DIR",
                       help=f"make (once) and use a local development CA and certificate in DIR "
                            f"(default {DEFAULT_DEV_CERT_DIR}); trust DIR/ca.pem in your clients")
    serve.add_argument("--recovery-window", type=_positive_float, default=30.0, metavar="SECONDS",
                       help="how long a reliable client's session waits for it to reconnect (default 30)")
    serve.add_argument("--replay-max-messages", type=_positive_int, default=1000,
                       help="unacknowledged messages kept per reliable client (default 1000)")
    serve.add_argument("--replay-max-bytes", type=_positive_int, default=16 * 1024 * 1024,
                       help="bytes of unacknowledged messages kept per reliable client (default 16 MiB)")
    serve.add_argument("--max-outbound-bytes", type=_positive_int, default=4 * 1024 * 1024,
                       help="bytes queued for one client before it is closed as too slow (default 4 MiB)")
    serve.add_argument("--keepalive", type=_positive_float, default=20.0, metavar="SECONDS",
                       help="ping clients quiet for this long (default 20, Azure's default)")
    serve.add_argument("--idle-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                       help="drop clients silent for this long, pings unanswered (default 60)")
    _add_limits(serve)
    serve.add_argument("--config", metavar="FILE", help="TOML hub settings: event handlers, anonymous connect "
                                                        "(its keys are below)")
    serve.add_argument("--redis-url", default=os.environ.get("FASTPUSH_REDIS_URL"),
                       help="redis://host:port/db: share hubs with other nodes through this Redis, or "
                            "redis+sentinel://host:port,host:port/master-name: through the master Redis Sentinel "
                            "names (default: $FASTPUSH_REDIS_URL, else redisUrl in the config file, else none: "
                            "one node)")
    serve.add_argument("--metrics-address", default=os.environ.get(METRICS_VARIABLE), metavar="[HOST:]PORT",
                       help="also serve /metrics on this address, without the access key it needs on the public "
                            "port (plain HTTP; a port alone = 127.0.0.1:PORT; with --workers N, worker i listens "
                            f"on PORT+i) (default: ${METRICS_VARIABLE}, else metricsAddress in the config file, "
                            "else none)")
    serve.add_argument("--workers", type=_worker_count, default=1, metavar="N",
                       help="server processes sharing the port (SO_REUSEPORT); 'auto' = one per core; "
                            "more than one needs --redis-url")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for worker processes
    serve.add_argument("--drain-timeout", type=_positive_float, default=None, metavar="SECONDS",
                       help=f"on SIGTERM, how long at most to wait while clients move to other processes or nodes "
                            f"(default: $FASTPUSH_DRAIN_TIMEOUT, else drainTimeoutSeconds in the config file, else "
                            f"{DRAIN_TIMEOUT_SECONDS:g}); SIGINT, or a second signal, stops at once")
    serve.add_argument("--broker-loss-timeout", type=_broker_loss_seconds, default=None, metavar="SECONDS",
                       help="with --redis-url: once Redis has been unreachable this long, close every client with "
                            "1012 (they reconnect, to a node that still hears the others) and end their sessions, "
                            "rather than let them miss what other nodes publish; at most "
                            f"{BROKER_LOSS_TIMEOUT_LIMIT:g} (default: brokerLossTimeoutSeconds in the config file, "
                            f"else {BROKER_LOSS_TIMEOUT_SECONDS:g})")
    serve.add_argument("--public-host", help="how clients reach this server, for the printed connection string and "
                                             "REST token audiences: name, name:port or https://name[:port] "
                                             "(a TLS-terminating proxy in front)")
    serve.add_argument("--log-level", type=_log_level, default="INFO", help="logging level (default INFO)")
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="log lines as text, or as one JSON object per line with each event's fields (default text)")
    _add_tools(commands)
    return parser


def _add_tools(commands: argparse._SubParsersAction[_Parser]) -> None:
    """The commands that talk to a running server (or sign for it) with its connection string."""
    def tool(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--connection-string", default=os.environ.get("FASTPUSH_CONNECTION_STRING"),
                             help="Endpoint=...;AccessKey=...;Version=1.0; (default $FASTPUSH_CONNECTION_STRING)")
        return command

    token = tool("token", "print a client URL with a signed access token, as the Azure portal's generator does")
    token.add_argument("--hub", required=True)
    token.add_argument("--user", help="the token's user id (sub)")
    token.add_argument("--role", action="append", default=[], help="a role to grant; repeat for more")
    token.add_argument("--group", action="append", default=[], help="a group to join on connect; repeat for more")
    token.add_argument("--minutes", type=_positive_int, default=60, help="minutes until the token expires (default 60)")
    send = tool("send", "send a message through the REST API: to a hub, a group, a user or a connection")
    send.add_argument("--hub", required=True)
    target = send.add_mutually_exclusive_group()
    target.add_argument("--group")
    target.add_argument("--user")
    target.add_argument("--connection")
    send.add_argument("--content-type", default="text/plain",
                      help="text/plain (default), application/json or application/octet-stream")
    send.add_argument("message")
    tool("status", "print a server's health (GET /api/health)")
    tool("dashboard", "print a new one-time login URL for a running server's dashboard")


def _add_limits(serve: argparse.ArgumentParser) -> None:
    """What one client, one address or the whole server may take: the guards for an exposed server."""
    serve.add_argument("--max-message-bytes", type=_positive_int, default=MAX_MESSAGE_BYTES,
                       help="largest WebSocket message a client may send (default 1 MiB, Azure's limit)")
    serve.add_argument("--max-body-bytes", type=_positive_int, default=MAX_BODY_BYTES,
                       help="largest REST request body (default 1 MiB)")
    serve.add_argument("--max-groups-per-connection", type=_positive_int, default=1000,
                       help="groups a client may join by itself (joinGroup); more get a BadRequest ack (default 1000)")
    serve.add_argument("--max-streams-per-connection", type=_positive_int, default=64,
                       help="group streams a client may have open at once; more are refused (default 64)")
    serve.add_argument("--max-stream-bytes", type=_positive_int, default=64 * 1024 * 1024,
                       help="data one group stream may carry before it is closed (default 64 MiB)")
    serve.add_argument("--max-connections", type=_positive_int, default=None,
                       help="open connections (WebSocket and HTTP) this process accepts "
                            "(default: derived from the open-file limit, `ulimit -n`)")
    serve.add_argument("--max-connections-per-ip", type=_positive_int, default=1000,
                       help="open connections from one client address (default 1000)")
    serve.add_argument("--request-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                       help="time a client has to send an HTTP request's head, and again its body (default 60)")
    serve.add_argument("--http-keepalive-timeout", type=_positive_float, default=75.0, metavar="SECONDS",
                       help="close an idle keep-alive HTTP connection after this long (default 75)")
    serve.add_argument("--max-upstream-connections", type=_positive_int, default=64,
                       help="sockets open at once to one event handler (scheme, host, port); more events wait "
                            "their turn within the upstream timeout (default 64)")
    serve.add_argument("--max-upstream-waiting", type=_positive_int, default=256,
                       help="events waiting for a socket to one event handler; more are refused at once (a "
                            "connect event: the handshake gets 503) instead of waiting to time out (default 256)")


class ServerOptions(TypedDict):
    """Keyword arguments for Server (fastpush.app), as server_options makes them."""

    host: str
    port: int
    config: Config | None
    redis_url: str | None
    access_key: str | None
    secondary_key: str | None
    ssl_context: ssl.SSLContext | None
    public_host: str | None
    recovery_window_seconds: float
    replay_max_messages: int
    replay_max_bytes: int
    max_outbound_bytes: int
    keepalive_seconds: float
    idle_timeout_seconds: float
    reuse_port: bool
    max_message_bytes: int
    max_body_bytes: int
    max_groups_per_connection: int
    max_streams_per_connection: int
    max_stream_bytes: int
    max_connections: int | None
    max_connections_per_ip: int
    request_head_timeout_seconds: float
    request_body_timeout_seconds: float
    http_keepalive_timeout_seconds: float
    max_upstream_connections: int
    max_upstream_waiting: int
    warn_ignored_settings: bool
    dashboard: bool
    metrics_address: tuple[str, int] | None
    broker_loss_timeout_seconds: float


def server_options(args: argparse.Namespace, *, config: Config | None = None,
                   ssl_context: ssl.SSLContext | None = None) -> ServerOptions:
    """The Server keyword arguments the parsed `serve` options ask for."""
    return ServerOptions(host=args.host, port=args.port, config=config, redis_url=args.redis_url,
                access_key=args.access_key, secondary_key=args.secondary_key, ssl_context=ssl_context,
                public_host=args.public_host, recovery_window_seconds=args.recovery_window,
                replay_max_messages=args.replay_max_messages, replay_max_bytes=args.replay_max_bytes,
                max_outbound_bytes=args.max_outbound_bytes, keepalive_seconds=args.keepalive,
                idle_timeout_seconds=args.idle_timeout, reuse_port=args.reuse_port,
                max_message_bytes=args.max_message_bytes, max_body_bytes=args.max_body_bytes,
                max_groups_per_connection=args.max_groups_per_connection, max_connections=args.max_connections,
                max_streams_per_connection=args.max_streams_per_connection, max_stream_bytes=args.max_stream_bytes,
                max_connections_per_ip=args.max_connections_per_ip,
                request_head_timeout_seconds=args.request_timeout,
                request_body_timeout_seconds=args.request_timeout,
                http_keepalive_timeout_seconds=args.http_keepalive_timeout,
                max_upstream_connections=args.max_upstream_connections,
                max_upstream_waiting=args.max_upstream_waiting,
                warn_ignored_settings=not args.reuse_port,  # a worker: its parent says it once
                dashboard=not args.reuse_port,  # a worker's dashboard would see one process behind a shared port
                metrics_address=_metrics_address(args.metrics_address) if args.metrics_address else None,
                broker_loss_timeout_seconds=_broker_loss_timeout(args.broker_loss_timeout, config))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"serve": _run, "token": _token, "send": _send, "status": _status, "dashboard": _dashboard}
    try:
        return commands[args.command](args)
    except StartupError as exc:
        print(f"fastpush: {exc}", file=sys.stderr, flush=True)
        return 2


def _run(args: argparse.Namespace) -> int:
    config = _load_config(args.config) if args.config else None
    args.redis_url = args.redis_url or (config.redis_url if config else None)
    args.drain_timeout = _drain_timeout(args.drain_timeout, config)
    args.broker_loss_timeout = _broker_loss_timeout(args.broker_loss_timeout, config)  # workers get it as a flag
    if args.redis_url:
        _check_redis_url(args.redis_url)
    args.metrics_address = args.metrics_address or (config.metrics_address if config else None)
    if args.metrics_address:
        _metrics_address(args.metrics_address)
    tls = _tls_files(args)
    if args.workers > 1 and not args.redis_url:
        raise StartupError("--workers above 1 needs a broker shared by the processes: pass --redis-url "
                           "(e.g. --redis-url redis://127.0.0.1:6379)")
    generated = _read_access_key_file(args)
    if args.workers > 1:
        if generated:
            print(generated, file=sys.stderr, flush=True)
        ignored = ignored_settings(config) if config else []
        if ignored:
            print("the config file's hub settings hold what fastpush ignores: " + "; ".join(ignored),
                  file=sys.stderr, flush=True)
        return run_workers(args, args.workers, tls)
    configure_logging(args.log_level, args.log_format)
    if generated:
        logging.getLogger("fastpush").info(generated)
    # picows' own messages only at DEBUG: at INFO they would log every connection's life
    logging.getLogger("fastpush.ws.picows").setLevel(logging.DEBUG if args.log_level == "DEBUG" else logging.WARNING)
    ssl_context = server_ssl_context(*tls) if tls else None
    _use_every_file_descriptor()
    _collect_less_often()
    if not args.reuse_port:  # a worker's parent holds the port for it
        close_all(reserve_port(args.host, args.port))  # a wrong address fails now, before Redis is asked
    if args.metrics_address:
        _check_metrics_address(_metrics_address(args.metrics_address))
    server = Server(**server_options(args, config=config, ssl_context=ssl_context))
    uvloop.run(_serve(server, args.redis_url, args.drain_timeout, announce_drain=args.reuse_port))
    return 0


# The cyclic garbage collector's thresholds in a `fastpush serve` process (Python's are 700, 10,
# 10). A handshake allocates a few hundred tracked objects and a connection keeps many, so with
# 700 a ramp or a reconnect storm ran young collections every few handshakes and full ones that
# walked every connection's objects as the heap grew: about a tenth of a worker's CPU. Cycles are
# still collected, after 20,000 allocations instead of 700. An embedding program keeps its own.
GC_THRESHOLDS = (20_000, 10, 10)


def _collect_less_often() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def _drain_timeout(given: float | None, config: Config | None) -> float:
    """--drain-timeout, else $FASTPUSH_DRAIN_TIMEOUT, else the config file's, else the default."""
    if given is not None:
        return given
    text = os.environ.get("FASTPUSH_DRAIN_TIMEOUT")
    if text:
        try:
            return _positive_float(text)
        except argparse.ArgumentTypeError as exc:
            raise StartupError(f"$FASTPUSH_DRAIN_TIMEOUT: {exc}") from None
    if config is not None and config.drain_timeout_seconds is not None:
        return config.drain_timeout_seconds
    return DRAIN_TIMEOUT_SECONDS


def _broker_loss_timeout(given: float | None, config: Config | None) -> float:
    """--broker-loss-timeout, else the config file's brokerLossTimeoutSeconds, else the default."""
    if given is not None:
        return given
    if config is not None and config.broker_loss_timeout_seconds is not None:
        return config.broker_loss_timeout_seconds
    return BROKER_LOSS_TIMEOUT_SECONDS


def _read_access_key_file(args: argparse.Namespace) -> str | None:
    """Set args.access_key from --access-key-file (making the file if there is none); what to tell
    the operator when a key was generated. A key also in the environment is a mistake: which of
    the two would the operator mean? (--access-key with it is refused by the parser.)"""
    if args.access_key_file is None:
        return None
    if os.environ.get(ACCESS_KEY_VARIABLE):
        raise StartupError(f"the access key is given twice, by --access-key-file and by ${ACCESS_KEY_VARIABLE}: "
                           f"give it one way (unset {ACCESS_KEY_VARIABLE}, or drop --access-key-file)")
    path = Path(args.access_key_file).expanduser()
    args.access_key, created = read_or_create_access_key(path)
    if not created:
        return None
    return f"generated a new access key in {path} (mode 0600); later starts with --access-key-file {path} keep it"


def _use_every_file_descriptor() -> None:
    """Raise the soft open-file limit to the hard one: each client is a descriptor, and the usual
    soft limit (1,024) would cap a server at about 900 connections (--max-connections' default
    is derived from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # A hard limit the kernel will not grant (RLIM_INFINITY on some systems): keep the soft one.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _load_config(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None


def _check_redis_url(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("redis", "rediss", SENTINEL_SCHEME):
        raise StartupError(f"--redis-url: {scheme or 'a URL without a scheme'}:// is none of redis://, rediss:// "
                           f"and {SENTINEL_SCHEME}://")
    try:
        if scheme == SENTINEL_SCHEME:
            Sentinels.from_url(url)
        else:
            RedisAddress.from_url(url)
    except ValueError as exc:
        raise StartupError(f"--redis-url: {exc}") from None


def _metrics_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise StartupError(f"--metrics-address: {exc}") from None


def _check_metrics_address(address: tuple[str, int]) -> None:
    """The metrics listener's address must be free and this machine's, like the port's."""
    try:
        close_all(reserve_port(*address, option="--metrics-address"))
    except StartupError as exc:
        raise StartupError(f"--metrics-address: {exc}") from None


def _tls_files(args: argparse.Namespace) -> tuple[str, str] | None:
    """The certificate and key to serve with, checked now so a mistake stops the start."""
    if args.dev_cert:
        try:
            cert = ensure_dev_certificate(Path(args.dev_cert))
        except OSError as exc:
            raise StartupError(f"cannot write the development certificate in --dev-cert {args.dev_cert}: "
                               f"{reason(exc)}") from None
        print(_dev_cert_hint(cert), flush=True)
        files = (str(cert.cert_file), str(cert.key_file))
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise StartupError("--tls-cert and --tls-key go together")
        files = (args.tls_cert, args.tls_key)
    else:
        return None
    _check_tls(*files)
    return files


def _dev_cert_hint(cert: DevCertificate) -> str:
    """One line: the variables that make clients trust the development CA. Node adds
    NODE_EXTRA_CA_CERTS to its own store; REQUESTS_CA_BUNDLE and SSL_CERT_FILE replace the store, so
    they name the bundle (the system's CAs plus the development CA), never the CA alone."""
    ca, bundle = shlex.quote(str(cert.ca_file)), shlex.quote(str(cert.bundle_file))
    source = (f"the system's CAs ({cert.system_cas}) and the development CA" if cert.system_cas else
              "only the development CA: no system CA file was found")
    return (f"Development CA: {cert.ca_file}; trust it with: export NODE_EXTRA_CA_CERTS={ca} "
            f"REQUESTS_CA_BUNDLE={bundle} SSL_CERT_FILE={bundle} ({cert.bundle_file.name} holds {source})")


def _check_tls(cert_file: str, key_file: str) -> None:
    for flag, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read {flag} {path}: {reason(exc)}") from None
    try:
        server_ssl_context(cert_file, key_file)
    except (OSError, ValueError) as exc:
        raise StartupError(f"--tls-cert {cert_file} with --tls-key {key_file}: not a PEM certificate chain and "
                           f"its private key ({reason(exc)})") from None


async def _serve(server: Server, redis_url: str | None, drain_timeout: float, *, announce_drain: bool) -> None:
    """Serve until a signal: SIGTERM drains (Server.drain), SIGINT stops at once, and so does a
    second signal during a drain. A worker (`announce_drain`) tells its parent on stdout that it
    drains, so the parent starts its replacement (fastpush.workers)."""
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    await _start(server, redis_url)
    print(server.connection_string, flush=True)
    if server.dashboard.enabled:
        url = server.dashboard.login_url()
        logging.getLogger("fastpush.dashboard").info("dashboard: %s (this login URL works once, within %d minutes; "
                                                     "`fastpush dashboard` makes another)", url,
                                                     LOGIN_TOKEN_SECONDS // 60,
                                                     extra={"event": "dashboard_url", "url": url})
        print(f"Dashboard: {url}", flush=True)
    if await signals.get() != signal.SIGTERM:
        await server.stop()
        return
    if announce_drain:
        print(DRAINING_LINE, flush=True)
    draining = loop.create_task(server.drain(drain_timeout))
    second = loop.create_task(signals.get())
    await asyncio.wait((draining, second), return_when=asyncio.FIRST_COMPLETED)
    second.cancel()
    server.hurry()
    await draining


async def _start(server: Server, redis_url: str | None) -> None:
    """Start, or raise StartupError naming what is in the way: Redis, or the address."""
    try:
        await asyncio.wait_for(server.start(), STARTUP_SECONDS)
    except OtherWireVersion as exc:
        raise StartupError(f"--redis-url: {exc}") from None
    except OSError as exc:  # TimeoutError included
        if redis_url and not server.node.broker.health()["healthy"]:
            why = f"no answer in {STARTUP_SECONDS:g} s" if isinstance(exc, TimeoutError) else reason(exc)
            raise StartupError(f"cannot reach {describe_url(redis_url)} (--redis-url): {why}") from None
        await server.node.broker.stop()
        raise StartupError(listen_error(server.host, server.port, exc)) from None


# --- token, send, status ------------------------------------------------------------------------
class _Target:
    """A server as its connection string names it: endpoint (scheme://host:port) and access key."""

    def __init__(self, connection_string: str | None):
        if not connection_string:
            raise StartupError("no connection string: pass --connection-string or set $FASTPUSH_CONNECTION_STRING")
        fields: dict[str, str] = {}
        for part in connection_string.split(";"):
            name, equals, value = part.strip().partition("=")
            if equals:
                fields[name.strip().lower()] = value.strip()
        endpoint, self.access_key = fields.get("endpoint", ""), fields.get("accesskey", "")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or not self.access_key:
            raise StartupError("the connection string must be Endpoint=http(s)://host[:port];AccessKey=...;"
                               "Version=1.0;")
        try:
            port = int(fields["port"]) if "port" in fields else parts.port
        except ValueError:
            raise StartupError("the connection string's port is not a number") from None
        port = port or (443 if parts.scheme == "https" else 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.endpoint = f"{parts.scheme}://{host}:{port}"

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, bytes]:
        """The status and body of one REST call, signed as the SDKs sign (aud = the full URL)."""
        url = f"{self.endpoint}{path}?api-version={API_VERSION}"
        token = jwt.encode({"aud": url, "exp": int(time.time()) + REST_TOKEN_SECONDS},
                           self.access_key.encode(), algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_SECONDS) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise StartupError(f"cannot reach {self.endpoint}: {reason}") from None


def _token(args: argparse.Namespace) -> int:
    target = _Target(args.connection_string)
    problem = _name_problem(args.hub, args.user, args.group)
    if problem is None:
        try:
            check_roles(args.role)
        except RoleError as exc:
            problem = f"--role: {exc}"
    if problem is not None:
        raise StartupError(problem)
    print(client_access_url(KeyRing(target.access_key), target.endpoint, args.hub, user_id=args.user,
                            roles=tuple(args.role), groups=tuple(args.group), minutes_to_expire=args.minutes))
    return 0


def _name_problem(hub: str, user: str | None, groups: list[str]) -> str | None:
    if not is_valid_hub(hub):
        return f"--hub: {hub_error(hub)}"
    if user is not None and not is_valid_user(user):
        return f"--user: {user_error(user)}"
    return next((f"--group: {group_error(g)}" for g in groups if not is_valid_group(g)), None)


def _send(args: argparse.Namespace) -> int:
    target = _Target(args.connection_string)
    problem = _name_problem(args.hub, args.user, [args.group] if args.group is not None else [])
    if problem is not None:
        raise StartupError(problem)
    path = f"/api/hubs/{quote(args.hub, safe='')}"
    for kind, name in (("groups", args.group), ("users", args.user), ("connections", args.connection)):
        if name is not None:
            path += f"/{kind}/{quote(name, safe='')}"
    status, body = target.request("POST", path + "/:send", args.message.encode(), args.content_type)
    if status != 202:
        raise StartupError(f"the server answered {status}: {_error_message(body)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Prints what /api/health says (it has no connection counts); exit 1 when degraded."""
    status, body = _Target(args.connection_string).request("GET", "/api/health")
    try:
        health = msgspec.json.decode(body) if status == 200 else None
    except msgspec.DecodeError:
        health = None
    if not isinstance(health, dict) or not isinstance(health.get("broker"), dict):
        raise StartupError(f"the server answered {status}, not a health report: {_error_message(body)}")
    print(f"status: {health.get('status')}")
    print("broker: " + ", ".join(f"{name}={value}" for name, value in health["broker"].items()))
    return 0 if health.get("status") == "healthy" else 1


def _dashboard(args: argparse.Namespace) -> int:
    """Asks the server for a login URL, signed with the access key as REST calls are."""
    status, body = _Target(args.connection_string).request("POST", "/dashboard/login-url")
    try:
        answer = msgspec.json.decode(body) if status == 200 else None
    except msgspec.DecodeError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("url"), str):
        raise StartupError(f"the server answered {status}, not a login URL: {_error_message(body)}")
    print(answer["url"])
    return 0


def _error_message(body: bytes) -> str:
    """The message of an Azure-style error body, else the body's start."""
    try:
        error = msgspec.json.decode(body)
    except msgspec.DecodeError:
        error = None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str):
        return message
    return body[:200].decode(errors="replace") or "(no body)"
