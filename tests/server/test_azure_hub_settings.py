"""A hub configuration copied from Azure loads as written: every field of the newest hub settings
schema is accepted, the fields fastpush implements take effect, the others are named once at
start with the reason, and a key Azure does not have is refused."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import tomllib
from pathlib import Path

import msgspec
import pytest

import fastpush
from fastpush.config import OWN_HUB_FIELDS, Config, ConfigError, HubSettings, load_config
from tests.cli_process import ServeProcess
from tests.events.upstream_server import Upstream
from tests.helpers import client_token, eventually
from tests.security.rawws import PING, RawWebSocket

FIXTURE = Path(__file__).parent / "fixtures" / "azure_hub_settings.toml"
KEY = "hub-settings-test-access-key-0123456789abcdef"

# The properties of Azure's hub settings, api-version 2026-03-01-preview (azure-rest-api-specs,
# specification/webpubsub/resource-manager/Microsoft.SignalRService/SignalRService: models.tsp's
# WebPubSubHubProperties, EventHandler, UpstreamAuthSettings, ManagedIdentitySettings,
# GroupPresenceEventFilters, EventListener, EventNameFilter, EventHubEndpoint, and the `chat`
# object of examples/2026-03-01-preview/WebPubSubHubs_CreateOrUpdate.json), written from the
# schema, not from fastpush's code. `[]` marks the items of a list.
AZURE_HUB_FIELDS = {
    "anonymousConnectPolicy",
    "webSocketKeepAliveIntervalInSeconds",
    "eventHandlers",
    "eventHandlers[].urlTemplate",
    "eventHandlers[].userEventPattern",
    "eventHandlers[].systemEvents",
    "eventHandlers[].auth",
    "eventHandlers[].auth.type",
    "eventHandlers[].auth.managedIdentity",
    "eventHandlers[].auth.managedIdentity.resource",
    "eventHandlers[].groupPresenceEvents",
    "eventHandlers[].groupPresenceEvents.eventNames",
    "eventHandlers[].groupPresenceEvents.groupFilters",
    "eventListeners",
    "eventListeners[].filter",
    "eventListeners[].filter.type",
    "eventListeners[].filter.systemEvents",
    "eventListeners[].filter.userEventPattern",
    "eventListeners[].endpoint",
    "eventListeners[].endpoint.type",
    "eventListeners[].endpoint.fullyQualifiedNamespace",
    "eventListeners[].endpoint.eventHubName",
    "chat",
    "chat.mode",
    "chat.persistentStorage",
    "chat.persistentStorage.id",
}


def _paths_in(value: object, prefix: str = "") -> set[str]:
    """Every key path in a TOML value, lists as `[]`."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | _paths_in(inner, path)
    elif isinstance(value, list):
        for item in value:
            paths |= _paths_in(item, prefix + "[]")
    return paths


def _fields_read(struct: type, prefix: str = "") -> set[str]:
    """Every key fastpush's hub settings accept, at every level, as written in the file."""
    paths: set[str] = set()
    tag_field = struct.__struct_config__.tag_field  # type: ignore[attr-defined]
    if tag_field:
        paths.add(f"{prefix}.{tag_field}")
    for field in msgspec.structs.fields(struct):
        path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
        paths.add(path)
        for inner, in_list in _structs_in(field.type):
            paths |= _fields_read(inner, path + ("[]" if in_list else ""))
    return paths


def _structs_in(annotation: object, in_list: bool = False) -> list[tuple[type, bool]]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [(annotation, in_list)]
    listed = in_list or getattr(annotation, "__origin__", None) is list
    return [found for argument in getattr(annotation, "__args__", ()) for found in _structs_in(argument, listed)]


def test_the_fixture_holds_every_azure_field():
    hubs = tomllib.loads(FIXTURE.read_text())["hubs"]
    held = set().union(*(_paths_in(hub) for hub in hubs.values()))
    assert sorted(AZURE_HUB_FIELDS - held) == []


def test_fastpush_reads_the_azure_fields_and_no_others():
    assert _fields_read(HubSettings) - OWN_HUB_FIELDS == AZURE_HUB_FIELDS
    assert _fields_read(HubSettings) >= OWN_HUB_FIELDS and not OWN_HUB_FIELDS & AZURE_HUB_FIELDS


@pytest.mark.parametrize("text,complaint", [
    ("[hubs.h]\nwebSocketKeepAliveInterval = 5\n", "webSocketKeepAliveInterval"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\ngroupPresenceEvent = { eventNames = [] }\n',
     "groupPresenceEvent"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\nauth = { kind = "None" }\n', "kind"),
    ('[hubs.h.chat]\nmode = "Enabled"\nhistory = 10\n', "history"),
    ('[[hubs.h.eventListeners]]\nfilter = { type = "EventName" }\n'
     'endpoint = { type = "EventHub", fullyQualifiedNamespace = "n", eventHubName = "e", sas = "x" }\n', "sas"),
    ('[[hubs.h.eventListeners]]\nfilter = { type = "Anything" }\n'
     'endpoint = { type = "EventHub", fullyQualifiedNamespace = "n", eventHubName = "e" }\n', "Anything"),
    ("[hubs.h]\nwebSocketKeepAliveIntervalInSeconds = 0\n", "1 to 120"),
    ("[hubs.h]\nwebSocketKeepAliveIntervalInSeconds = 121\n", "1 to 120"),
    ("[hubs.h]\nwebSocketKeepAliveIntervalInSeconds = 2.5\n", "int"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\ngroupPresenceEvents = { eventNames = ["joinned"] }\n',
     "joinned"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\n'
     'groupPresenceEvents = { eventNames = ["left"], groupFilters = ["a*b*c*d*e*f*"] }\n', "groupFilters[0]"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\n'
     'groupPresenceEvents = { eventNames = ["left"], groupFilters = [""] }\n', "groupFilters[0] is empty"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\nauth = { type = "Basic" }\n', "auth.type"),
    ('[[hubs.h.eventHandlers]]\nurlTemplate = "https://x/{@Microsoft.KeyVault(SecretUri=https://v/s)}"\n',
     "Key Vault"),
    ('[hubs.h]\nconflateGroups = ["a*b*c*d*e*f*"]\n', "conflateGroups[0]"),
    ('[hubs.h]\nconflateGroups = ["p.*", ""]\n', "conflateGroups[1]"),
    ('[hubs.h]\nconflateGroups = "p.*"\n', "conflateGroups"),
    ("[hubs.h]\nmaxMessagesPerSecond = 5\n", "conflateGroups, which is empty"),
    ('[hubs.h]\nconflateGroups = ["p.*"]\nmaxMessagesPerSecond = 0\n', "maxMessagesPerSecond must be"),
    ('[hubs.h]\nconflateGroups = ["p.*"]\nmaxMessagesPerSecond = inf\n', "maxMessagesPerSecond must be"),
    ('[hubs.h]\nconflateGroups = ["p.*"]\nmaxMessagesPerSecond = nan\n', "maxMessagesPerSecond must be"),
    ('[hubs.h]\nconflateGroup = ["p.*"]\n', "conflateGroup"),
])
def test_what_is_not_azure_or_not_valid_is_refused(tmp_path, text, complaint):
    path = tmp_path / "hubs.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(complaint)) as refused:
        load_config(path)
    assert str(path) in str(refused.value)


def test_too_many_group_filters_are_refused(tmp_path):
    path = tmp_path / "hubs.toml"
    filters = ", ".join(f'"g{i}"' for i in range(101))
    path.write_text(f'[[hubs.h.eventHandlers]]\nurlTemplate = "http://x"\n'
                    f'groupPresenceEvents = {{ eventNames = ["joined"], groupFilters = [{filters}] }}\n')
    with pytest.raises(ConfigError, match="at most 100"):
        load_config(path)


def _with_upstream(config: Config, upstream: Upstream) -> Config:
    """The fixture with its handlers' URL pointed at the test's upstream."""
    hubs = {name: msgspec.structs.replace(hub, event_handlers=[
        msgspec.structs.replace(h, url_template=upstream.url_template()) for h in hub.event_handlers])
        for name, hub in config.hubs.items()}
    return msgspec.structs.replace(config, hubs=hubs)


async def _first_ping(ws: RawWebSocket, seconds: float) -> bool:
    try:
        while (await ws.recv(timeout=seconds)).opcode != PING:
            pass
    except TimeoutError:
        return False
    return True


async def test_the_azure_fields_fastpush_implements_take_effect():
    upstream = Upstream([KEY])
    try:
        config = _with_upstream(load_config(FIXTURE), upstream)
        async with fastpush.Server(port=0, access_key=KEY, config=config, keepalive_seconds=60) as server:
            base = f"ws://127.0.0.1:{server.port}/client/hubs"
            # anonymousConnectPolicy = "allow": no token; the connect event (systemEvents) is asked.
            anonymous = await RawWebSocket.connect(f"{base}/exampleHub")
            plain = await RawWebSocket.connect(
                f"{base}/plainHub?access_token={client_token(KEY, server.endpoint, 'plainHub')}")
            connect_event = next(r for r in upstream.requests if r.headers.get("ce-eventname") == "connect")
            assert connect_event.headers.get("ce-userid") is None
            assert await eventually(lambda: upstream.events("connected"))  # "Connected", as Azure writes it too

            # webSocketKeepAliveIntervalInSeconds = 1: pinged within a few seconds; plainHub's
            # clients keep the server's 60 s and get none meanwhile.
            assert await _first_ping(anonymous, 10.0)
            assert not await _first_ping(plain, 0.1)

            # groupPresenceEvents: joined, for the groups its filter matches ("chat*").
            (conn_id,) = [c.connection_id for c in server.node.hub("exampleHub").connections]
            hub = server.hub("exampleHub")
            for group in ("other", "chat1"):
                assert await hub.add_connection_to_group(group, conn_id)
            assert await eventually(lambda: upstream.events("joined"))
            (joined,) = upstream.events("joined")
            assert json.loads(joined.body) == {"group": "chat1"}  # "other" came first, and was not sent
            assert joined.headers["ce-type"] == "azure.webpubsub.gp.joined"
            assert joined.headers.get("authorization") is None  # auth (ManagedIdentity) is ignored
            assert upstream.bad_signatures == []
            anonymous.close()
            plain.close()
    finally:
        upstream.close()


def _warnings(output: list[str]) -> list[str]:
    return [line for line in output if "hub settings hold what fastpush ignores" in line]


@pytest.mark.parametrize("workers", [1, 2])
def test_what_is_ignored_is_said_once_at_start(workers, redis_server):
    extra = ["--workers", "2", "--redis-url", redis_server.url] if workers == 2 else []
    process = ServeProcess("--config", str(FIXTURE), *extra)
    assert process.stop(signal.SIGTERM) == 0
    output = process.output + process.proc.stdout.readlines()
    (warning,) = _warnings(output)
    for named in ("hubs.exampleHub.eventHandlers[0].auth (ManagedIdentity)", "no Authorization header",
                  "hubs.exampleHub.eventListeners (1)", "Event Hubs", "hubs.exampleHub.chat", "Chat feature"):
        assert named in warning, warning
    assert "plainHub" not in warning


async def test_a_config_without_ignored_settings_warns_nothing(caplog):
    config = Config(hubs={"h": HubSettings(web_socket_keep_alive_interval_in_seconds=5)})
    async with fastpush.Server(port=0, config=config):
        await asyncio.sleep(0)
    assert _warnings([r.getMessage() for r in caplog.records]) == []
