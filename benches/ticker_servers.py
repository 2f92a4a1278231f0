"""The servers the ticker benchmark compares, and how a subscriber and the publisher reach each.

- fastpush: a symbol is a group; a subscriber follows its symbols through its client token's
  `webpubsub.group` claim (joined at the handshake, no round trip after it); ticks arrive as
  json.webpubsub.azure.v1 `sendToGroup` messages.
- Centrifugo: a symbol is a channel; a subscriber sends `subs` in its connect command (subscribed in
  the connect round trip); ticks arrive as `publish` commands.
- Node ws: a symbol is a topic; a subscriber names them in `?topics=` of its upgrade URL; ticks arrive
  as `{"topic","data"}` messages.

Every one is started by benches/servers.py (pinned to the server core, `Endpoint=` line), and every one
gets its ticks from one WebSocket publisher (benches/ws_publisher.py).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt

from . import centrifugo
from .embedded_server import BENCH_CONNECTIONS_PER_IP
from .servers import PEERS_DIR, Target, prepare
from .ticker_workload import group_name

__all__ = ["CENTRIFUGO", "CONFLATE_KEY", "FASTPUSH", "HUB", "NODE_WS", "TICKER_TARGETS", "ClientSpec", "TickerTarget",
           "client_spec", "conflation_support", "fastpush_conflating", "prepare_target", "publisher_spec"]

HUB = "ticker"
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
TOKEN_SECONDS = 3600
CONFLATE_KEY = "conflateGroups"
CONFLATED = ["tick.*"]  # every symbol's group (benches/ticker_workload.group_name)


@dataclass(frozen=True)
class TickerTarget:
    """A server under test; `measured_children`: its own process is a launcher, and CPU and memory are
    those of the launcher's child (the server)."""

    server: Target
    dialect: str
    measured_children: bool = False

    @property
    def key(self) -> str:
        return self.server.key

    @property
    def label(self) -> str:
        return self.server.label


@dataclass(frozen=True)
class ClientSpec:
    path: str
    protocol: str | None
    hello: str | None


def _fastpush_argv(config: Path | None = None):
    def argv(key: str, _redis: str | None) -> list[str]:
        command = [sys.executable, "-m", "fastpush", "serve", "--port", "0", f"--access-key={key}",
                   "--log-level", "WARNING", f"--max-connections-per-ip={BENCH_CONNECTIONS_PER_IP}"]
        return command + (["--config", str(config)] if config else [])
    return argv


def _centrifugo_argv(key: str, _redis: str | None) -> list[str]:
    found = centrifugo.binary()
    if found is None:
        raise RuntimeError(f"Centrifugo v{centrifugo.VERSION} is not installed")
    return [sys.executable, "-m", "benches.peers.centrifugo_peer", "--binary", found]


FASTPUSH = TickerTarget(Target("fastpush", "fastpush", "ws", _fastpush_argv()), "webpubsub")
CENTRIFUGO = TickerTarget(Target("centrifugo", f"Centrifugo v{centrifugo.VERSION}", "ws", _centrifugo_argv),
                          "centrifugo", measured_children=True)
NODE_WS = TickerTarget(Target("node-ws", "Node ws (topic map)", "ws",
                              lambda key, _: ["node", str(PEERS_DIR / "ws_topics.js")]), "plain")
TICKER_TARGETS = (FASTPUSH, CENTRIFUGO, NODE_WS)


def fastpush_conflating(config: Path) -> TickerTarget:
    """fastpush with `conflateGroups` over every symbol's group, from the config file at `config`."""
    return TickerTarget(Target("fastpush-conflate", "fastpush, conflation on", "ws", _fastpush_argv(config)),
                        "webpubsub")


def conflation_support(scratch: Path) -> tuple[Path | None, str | None]:
    """(a config file that turns conflation on for every symbol, None) when this checkout's fastpush knows
    `conflateGroups`, else (None, why the conflation row is skipped). The file is the one the row uses:
    the server's own loader checks it."""
    from fastpush.config import ConfigError, load_config

    path = scratch / "conflate.toml"
    path.write_text(f"[hubs.{HUB}]\n{CONFLATE_KEY} = {json.dumps(CONFLATED)}\n")
    try:
        load_config(path)
    except ConfigError as exc:
        return None, (f"conflation row skipped: this fastpush does not accept `{CONFLATE_KEY}` in its config file "
                      f"yet ({str(exc).splitlines()[0][:160]})")
    return path, None


def prepare_target(target: TickerTarget, build: bool) -> str | None:
    """Make the target runnable; the reason it cannot run here, or None."""
    if target.dialect == "centrifugo":
        return centrifugo.find_or_build(build)[1]
    return prepare(target.server)  # for Node ws: `npm ci` in benches/peers, once


def _token(audience: str, access_key: str, **claims: object) -> str:
    payload = {"aud": audience, "exp": int(time.time()) + TOKEN_SECONDS, **claims}
    return jwt.encode(payload, access_key.encode(), algorithm="HS256")


def client_spec(target: TickerTarget, endpoint: str, access_key: str, symbols: Sequence[int]) -> ClientSpec:
    """How a subscriber following `symbols` connects to `target` at `endpoint`."""
    groups = [group_name(s) for s in symbols]
    if target.dialect == "webpubsub":
        token = _token(f"{endpoint}/client/hubs/{HUB}", access_key, **{"webpubsub.group": groups})
        return ClientSpec(f"/client/hubs/{HUB}?access_token={token}", JSON_SUBPROTOCOL, None)
    if target.dialect == "centrifugo":
        return ClientSpec(centrifugo.PATH_SUFFIX, None, centrifugo.connect_command(groups))
    return ClientSpec("/?topics=" + ",".join(groups), None, None)


def publisher_spec(target: TickerTarget, endpoint: str, access_key: str) -> ClientSpec:
    """How the publisher connects: fastpush's needs the role that lets a client send to any group."""
    if target.dialect == "webpubsub":
        token = _token(f"{endpoint}/client/hubs/{HUB}", access_key, role=["webpubsub.sendToGroup"])
        return ClientSpec(f"/client/hubs/{HUB}?access_token={token}", JSON_SUBPROTOCOL, None)
    if target.dialect == "centrifugo":
        return ClientSpec(centrifugo.PATH_SUFFIX, None, centrifugo.connect_command([]))
    return ClientSpec("/", None, None)
