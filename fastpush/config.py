"""Hub settings from a TOML file (`fastpush serve --config FILE`), written as Azure writes them.

Every field of Azure's hub settings (ARM `Microsoft.SignalRService/webPubSub/hubs` properties,
api-version 2026-03-01-preview) loads, under its Azure name, so a hub copied from Azure starts
as it is. What fastpush does not do is accepted and named once at start (`ignored_settings`),
with the reason; a key Azure does not have is refused.

    upstreamTimeoutSeconds = 20          # fastpush's own: per event handler call
    redisUrl = "redis://127.0.0.1:6379"  # fastpush's own: share hubs with other nodes (--redis-url wins)
    drainTimeoutSeconds = 25             # fastpush's own: longest drain on SIGTERM (--drain-timeout wins)
    metricsAddress = "127.0.0.1:9100"    # fastpush's own: /metrics without a key there (--metrics-address wins)
    brokerLossTimeoutSeconds = 5         # fastpush's own: Redis away this long closes the clients (the flag wins)

    [hubs.chat]
    anonymousConnectPolicy = "deny"      # or "allow": no token needed; connect may set the userId
    webSocketKeepAliveIntervalInSeconds = 20
    lastValueGroups = ["prices.*"]       # fastpush's own: a joiner gets the latest message(s) at once
    lastValueDepth = 1                   # fastpush's own: how many (1 to 100)
    lastValueMaxGroups = 10000           # fastpush's own: cached groups per hub (least recently sent go)
    lastValueMaxBytes = 67108864         # fastpush's own: cached payload bytes per hub

    [[hubs.chat.eventHandlers]]          # ordered; the first that matches an event gets it
    urlTemplate = "http://127.0.0.1:3000/api/webpubsub/hubs/{hub}/{event}"
    userEventPattern = "*"               # "*", "a,b", or "" for none
    systemEvents = ["connect", "connected", "disconnected"]
    groupPresenceEvents = { eventNames = ["joined", "left"], groupFilters = ["chat*"] }

    [hubs.ticker]
    conflateGroups = ["prices.*"]        # fastpush's own: a slow reader gets the latest value per group
    maxMessagesPerSecond = 5             # fastpush's own, optional: per connection per conflated group
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from .conflation import ConflationRules
from .events.model import PRESENCE_EVENTS, SYSTEM_EVENTS
from .events.presence import PresenceRule
from .lastvalue import DEFAULT_MAX_BYTES, DEFAULT_MAX_GROUPS, MAX_DEPTH, MAX_PATTERNS, LastValuePolicy
from .permissions import RoleError, compile_group_pattern
from .protocol.names import is_valid_hub

__all__ = ["Config", "HubSettings", "EventHandlerSettings", "UpstreamAuthSettings", "ManagedIdentitySettings",
           "GroupPresenceEventFilters", "EventListenerSettings", "EventNameFilter", "EventHubEndpoint",
           "ChatSettings", "ResourceReference", "ConfigError", "load_config", "ignored_settings", "presence_rule",
           "KEEPALIVE_RANGE", "MAX_GROUP_FILTERS", "MAX_MESSAGES_PER_SECOND", "OWN_HUB_FIELDS", "conflation_rules",
           "last_value_policy", "LAST_VALUE_MAX_GROUPS_LIMIT", "LAST_VALUE_MAX_BYTES_LIMIT",
           "BROKER_LOSS_TIMEOUT_LIMIT", "broker_loss_timeout_error"]

KEEPALIVE_RANGE = (1, 120)  # Azure's bounds of webSocketKeepAliveIntervalInSeconds
MAX_GROUP_FILTERS = 100  # groupPresenceEvents.groupFilters of one handler: each is tried on every join and leave
# The hub keys that are fastpush's own, not Azure's (documented in the README's configuration section).
OWN_HUB_FIELDS = frozenset({"conflateGroups", "maxMessagesPerSecond", "lastValueGroups", "lastValueDepth",
                                 "lastValueMaxGroups", "lastValueMaxBytes"})
MAX_MESSAGES_PER_SECOND = 10_000.0  # maxMessagesPerSecond's ceiling (conflateGroups has at most MAX_GROUP_FILTERS)
LAST_VALUE_MAX_GROUPS_LIMIT = 1_000_000  # the largest lastValueMaxGroups a hub may ask for
LAST_VALUE_MAX_BYTES_LIMIT = 1024 ** 3  # the largest lastValueMaxBytes a hub may ask for (1 GiB)
# The longest broker-loss timeout (flag or file): a node cut off from the others for longer than an
# hour would keep clients that miss everything published elsewhere, which no setting should allow.
BROKER_LOSS_TIMEOUT_LIMIT = 3600.0


class ConfigError(ValueError):
    """The configuration file is not valid; the message says where."""


class _Setting(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Azure's names (camelCase); a key Azure does not have is refused."""


class ManagedIdentitySettings(_Setting):
    resource: str | None = None


class UpstreamAuthSettings(_Setting):
    type: str | None = None  # "None" or "ManagedIdentity"
    managed_identity: ManagedIdentitySettings | None = None


class GroupPresenceEventFilters(_Setting):
    event_names: list[str]  # "joined", "left"; empty: none
    group_filters: list[str] | None = None  # patterns; none or empty: every group


class EventHandlerSettings(_Setting):
    url_template: str
    user_event_pattern: str = ""
    system_events: list[str] = []
    auth: UpstreamAuthSettings | None = None
    group_presence_events: GroupPresenceEventFilters | None = None


class EventNameFilter(_Setting, tag="EventName", tag_field="type"):
    system_events: list[str] = []
    user_event_pattern: str | None = None


class EventHubEndpoint(_Setting, tag="EventHub", tag_field="type"):
    fully_qualified_namespace: str
    event_hub_name: str


class EventListenerSettings(_Setting):
    filter: EventNameFilter
    endpoint: EventHubEndpoint


class ResourceReference(_Setting):
    id: str | None = None


class ChatSettings(_Setting):
    mode: str | None = None
    persistent_storage: ResourceReference | None = None


class HubSettings(_Setting):
    event_handlers: list[EventHandlerSettings] = []
    event_listeners: list[EventListenerSettings] = []
    anonymous_connect_policy: str = "deny"
    web_socket_keep_alive_interval_in_seconds: int | None = None  # None: the server's --keepalive
    chat: ChatSettings | None = None
    # fastpush's own: conflation for slow readers of these groups (fastpush.conflation)
    conflate_groups: list[str] = []
    max_messages_per_second: float | None = None
    # fastpush's own: the last-value cache (fastpush.lastvalue)
    last_value_groups: list[str] = []
    last_value_depth: int = 1
    last_value_max_groups: int = DEFAULT_MAX_GROUPS
    last_value_max_bytes: int = DEFAULT_MAX_BYTES


class Config(_Setting):
    hubs: dict[str, HubSettings] = {}
    upstream_timeout_seconds: float = 20.0
    redis_url: str | None = None
    drain_timeout_seconds: float | None = None
    metrics_address: str | None = None
    broker_loss_timeout_seconds: float | None = None  # None: --broker-loss-timeout, else its default


def broker_loss_timeout_error(seconds: float) -> str | None:
    """Why `seconds` is not a broker-loss timeout (the flag's and the file key's one rule), or None."""
    if not 0 < seconds <= BROKER_LOSS_TIMEOUT_LIMIT:
        return f"must be above 0 and at most {BROKER_LOSS_TIMEOUT_LIMIT:g} (seconds)"
    return None


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
    loss = config.broker_loss_timeout_seconds
    if loss is not None and (error := broker_loss_timeout_error(loss)) is not None:
        raise ConfigError(f"{where}: brokerLossTimeoutSeconds {error}")
    for name, hub in config.hubs.items():
        if not is_valid_hub(name):
            raise ConfigError(f"{where}: '{name}' is not a valid hub name")
        at = f"{where}: hubs.{name}"
        if hub.anonymous_connect_policy.lower() not in ("allow", "deny"):
            raise ConfigError(f"{at}.anonymousConnectPolicy must be 'allow' or 'deny'")
        interval = hub.web_socket_keep_alive_interval_in_seconds
        low, high = KEEPALIVE_RANGE
        if interval is not None and not low <= interval <= high:
            raise ConfigError(f"{at}.webSocketKeepAliveIntervalInSeconds must be {low} to {high} (seconds)")
        for i, handler in enumerate(hub.event_handlers):
            _check_handler(handler, f"{at}.eventHandlers[{i}]")
        _check_conflation(hub, at)
        _check_last_values(hub, at)


def _check_conflation(hub: HubSettings, at: str) -> None:
    _check_patterns(hub.conflate_groups, MAX_GROUP_FILTERS, f"{at}.conflateGroups")
    rate = hub.max_messages_per_second
    if rate is not None:
        if not hub.conflate_groups:
            raise ConfigError(f"{at}.maxMessagesPerSecond applies to conflateGroups, which is empty")
        if not 0 < rate <= MAX_MESSAGES_PER_SECOND:
            raise ConfigError(f"{at}.maxMessagesPerSecond must be above 0 and at most {MAX_MESSAGES_PER_SECOND:g}")


def _check_last_values(hub: HubSettings, at: str) -> None:
    _check_patterns(hub.last_value_groups, MAX_PATTERNS, f"{at}.lastValueGroups")
    bounds = (("lastValueDepth", hub.last_value_depth, MAX_DEPTH),
              ("lastValueMaxGroups", hub.last_value_max_groups, LAST_VALUE_MAX_GROUPS_LIMIT),
              ("lastValueMaxBytes", hub.last_value_max_bytes, LAST_VALUE_MAX_BYTES_LIMIT))
    for key, value, high in bounds:
        if not 1 <= value <= high:
            raise ConfigError(f"{at}.{key} must be 1 to {high}")


def last_value_policy(hub: HubSettings) -> LastValuePolicy | None:
    """The hub's last-value cache settings, or None when it caches no group."""
    if not hub.last_value_groups:
        return None
    return LastValuePolicy(hub.last_value_groups, hub.last_value_depth, hub.last_value_max_groups,
                           hub.last_value_max_bytes)


def _check_handler(handler: EventHandlerSettings, at: str) -> None:
    unknown = {e.lower() for e in handler.system_events} - set(SYSTEM_EVENTS)
    if unknown:
        raise ConfigError(f"{at}.systemEvents: unknown {sorted(unknown)}; use {', '.join(SYSTEM_EVENTS)}")
    url = handler.url_template
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{at}.urlTemplate must be an http(s) URL")
    if "{@" in url:
        raise ConfigError(f"{at}.urlTemplate: Key Vault references cannot be resolved by fastpush; "
                          "write the value into the URL")
    auth_type = handler.auth.type if handler.auth is not None else None
    if auth_type is not None and auth_type.lower() not in ("none", "managedidentity"):
        raise ConfigError(f"{at}.auth.type must be 'None' or 'ManagedIdentity'")
    presence = handler.group_presence_events
    if presence is not None:
        unknown = {e.lower() for e in presence.event_names} - set(PRESENCE_EVENTS)
        if unknown:
            raise ConfigError(f"{at}.groupPresenceEvents.eventNames: unknown {sorted(unknown)}; "
                              f"use {', '.join(PRESENCE_EVENTS)}")
        _check_patterns(presence.group_filters or [], MAX_GROUP_FILTERS, f"{at}.groupPresenceEvents.groupFilters")


def _check_patterns(patterns: list[str], limit: int, at: str) -> None:
    """A list of wildcard group patterns (the syntax of the wildcard group roles): at most `limit`,
    none empty, each one that compiles."""
    if len(patterns) > limit:
        raise ConfigError(f"{at}: at most {limit} patterns")
    for j, pattern in enumerate(patterns):
        if not pattern:
            raise ConfigError(f"{at}[{j}] is empty")
        try:
            compile_group_pattern(pattern)
        except RoleError as exc:
            raise ConfigError(f"{at}[{j}]: {exc}") from None


def presence_rule(filters: GroupPresenceEventFilters) -> PresenceRule:
    """`groupPresenceEvents` as the dispatcher matches it: `groupFilters` are wildcard group
    patterns, in the syntax of the wildcard group roles (fastpush.permissions)."""
    return PresenceRule(frozenset(e.lower() for e in filters.event_names),
                        tuple(compile_group_pattern(p).fullmatch for p in filters.group_filters or ()))


def conflation_rules(hub: HubSettings) -> ConflationRules | None:
    """`conflateGroups` and `maxMessagesPerSecond` as the hub applies them (None: none)."""
    if not hub.conflate_groups:
        return None
    return ConflationRules(tuple(compile_group_pattern(p).fullmatch for p in hub.conflate_groups),
                           hub.max_messages_per_second)


def ignored_settings(config: Config) -> list[str]:
    """The Azure settings in `config` that fastpush accepts but does not act on, each with why
    (said once at start, so nobody believes a setting works that does not)."""
    ignored: list[str] = []
    for name, hub in config.hubs.items():
        for i, handler in enumerate(hub.event_handlers):
            auth = handler.auth
            if auth is not None and (auth.type or "none").lower() == "managedidentity":
                ignored.append(f"hubs.{name}.eventHandlers[{i}].auth (ManagedIdentity): fastpush has no managed "
                               "identity to get a token from, so its events carry no Authorization header")
        if hub.event_listeners:
            ignored.append(f"hubs.{name}.eventListeners ({len(hub.event_listeners)}): Event Hubs listeners need "
                           "Azure Event Hubs and a managed identity; no events are sent to them")
        if hub.chat is not None:
            ignored.append(f"hubs.{name}.chat: the Chat feature (preview) and its persistent storage are "
                           "not implemented")
    return ignored
