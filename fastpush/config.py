"""Hub settings from a TOML file (`fastpush serve --config FILE`), with Azure's setting names:

    upstreamTimeoutSeconds = 20          # optional, per event handler call
    redisUrl = "redis://127.0.0.1:6379"  # optional: share hubs with other nodes (--redis-url wins)
    drainTimeoutSeconds = 25             # optional: longest drain on SIGTERM (--drain-timeout wins)
    metricsAddress = "127.0.0.1:9100"    # optional: /metrics without a key there (--metrics-address wins)

    [hubs.chat]
    anonymousConnectPolicy = "deny"      # or "allow": no token needed; connect may set the userId

    [[hubs.chat.eventHandlers]]          # ordered; the first that matches an event gets it
    urlTemplate = "http://127.0.0.1:3000/api/webpubsub/hubs/{hub}/{event}"
    userEventPattern = "*"               # "*", "a,b", or "" for none
    systemEvents = ["connect", "connected", "disconnected"]
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from .events.model import SYSTEM_EVENTS
from .protocol.names import is_valid_hub

__all__ = ["Config", "HubSettings", "EventHandlerSettings", "ConfigError", "load_config"]


class ConfigError(ValueError):
    """The configuration file is not valid; the message says where."""


class EventHandlerSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    url_template: str
    user_event_pattern: str = ""
    system_events: list[str] = []


class HubSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    event_handlers: list[EventHandlerSettings] = []
    anonymous_connect_policy: str = "deny"


class Config(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    hubs: dict[str, HubSettings] = {}
    upstream_timeout_seconds: float = 20.0
    redis_url: str | None = None
    drain_timeout_seconds: float | None = None
    metrics_address: str | None = None


def load_config(path: str | Path) -> Config:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check(config, str(path))
    return config


def _check(config: Config, where: str) -> None:
    if config.upstream_timeout_seconds <= 0:
        raise ConfigError(f"{where}: upstreamTimeoutSeconds must be positive")
    if config.drain_timeout_seconds is not None and not 0 < config.drain_timeout_seconds < float("inf"):
        raise ConfigError(f"{where}: drainTimeoutSeconds must be a positive number")
    for name, hub in config.hubs.items():
        if not is_valid_hub(name):
            raise ConfigError(f"{where}: '{name}' is not a valid hub name")
        if hub.anonymous_connect_policy.lower() not in ("allow", "deny"):
            raise ConfigError(f"{where}: hubs.{name}.anonymousConnectPolicy must be 'allow' or 'deny'")
        for i, handler in enumerate(hub.event_handlers):
            unknown = set(handler.system_events) - set(SYSTEM_EVENTS)
            if unknown:
                raise ConfigError(f"{where}: hubs.{name}.eventHandlers[{i}].systemEvents: unknown {sorted(unknown)}; "
                                  f"use {', '.join(SYSTEM_EVENTS)}")
            if not handler.url_template.startswith(("http://", "https://")):
                raise ConfigError(f"{where}: hubs.{name}.eventHandlers[{i}].urlTemplate must be an http(s) URL")
