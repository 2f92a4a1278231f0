"""Hostile input to the last-value cache: REST GET .../lastValue without a valid token or with a
bad hub or group name is answered with 401/400; bad settings are refused at start; a caller who
sends to ever more groups, or ever larger messages, cannot grow the cache past its hub's bounds."""
from __future__ import annotations

import pytest

import fastpush
from fastpush.config import ConfigError, HubSettings, _check_last_values
from fastpush.lastvalue import ENTRY_OVERHEAD_BYTES, Cached, LastValuePolicy, LastValues
from fastpush.protocol.payload import DataType, Payload
from tests.helpers import ServerView
from tests.server.test_bad_input import API
from tests.server.test_bad_input import acall as _acall

KEY = "last-value-attack-key-0123456789abcdefghijklmn"
HUB = "ticker"
MAX_GROUPS, MAX_BYTES = 5, 4096


@pytest.fixture
async def server():
    settings = HubSettings(last_value_groups=["p.**"], last_value_depth=2, last_value_max_groups=MAX_GROUPS,
                           last_value_max_bytes=MAX_BYTES)
    async with fastpush.Server(port=0, access_key=KEY, config=fastpush.Config(hubs={HUB: settings})) as srv:
        yield srv


async def acall(server, *args, **kwargs):
    return await _acall(ServerView.of(server), *args, **kwargs)


def _path(group: str, hub: str = HUB) -> str:
    return f"/api/hubs/{hub}/groups/{group}/lastValue?{API}"


async def test_no_token_or_a_wrong_one_is_401(server):
    assert (await acall(server, "GET", _path("p.a"), token=None))[0] == 401
    assert (await acall(server, "GET", _path("p.a"), token="x.y.z"))[0] == 401


@pytest.mark.parametrize("group", ["x" * 1025, "%20", "%20%09"])
async def test_bad_group_names_are_400(server, group):
    status, body = await acall(server, "GET", _path(group))
    assert status == 400 and body["code"] == "BadRequest", body


@pytest.mark.parametrize("group", ["%00bad", "a%0Ab", "%22%7D%5D"])
async def test_odd_but_valid_group_names_are_answered_as_json(server, group):
    """Control characters and quotes are valid in group names (as the service has them): 404 for
    a group outside the patterns, its name escaped in the JSON answer."""
    status, body = await acall(server, "GET", _path(group))
    assert status == 404 and body["code"] == "NotFound", body


async def test_a_bad_hub_name_is_400(server):
    assert (await acall(server, "GET", _path("p.a", hub="bad%20hub")))[0] == 400


async def test_other_methods_have_no_route(server):
    assert (await acall(server, "POST", _path("p.a"), b"x"))[0] == 404
    assert (await acall(server, "DELETE", _path("p.a")))[0] == 404


async def test_sending_to_many_groups_keeps_the_newest_within_bounds(server):
    for i in range(40):
        assert (await acall(server, "POST", f"/api/hubs/{HUB}/groups/p.{i}/:send?{API}", b"v%d" % i))[0] == 202
    hub = server.node.find(HUB)
    assert len(hub.last_values) == MAX_GROUPS and hub.last_values.bytes <= MAX_BYTES
    assert (await acall(server, "GET", _path("p.0")))[1] == []  # the least recently sent went first
    assert (await acall(server, "GET", _path("p.39")))[1] == [{"dataType": "text", "data": "v39"}]


async def test_a_message_too_large_for_the_hub_is_not_kept_nor_older_ones(server):
    send = f"/api/hubs/{HUB}/groups/p.big/:send?{API}"
    assert (await acall(server, "POST", send, b"small"))[0] == 202
    assert (await acall(server, "GET", _path("p.big")))[1] == [{"dataType": "text", "data": "small"}]
    assert (await acall(server, "POST", send, b"x" * MAX_BYTES))[0] == 202
    assert (await acall(server, "GET", _path("p.big")))[1] == []  # never a value older than the latest


def test_bytes_stay_bounded_whatever_the_sizes():
    cache = LastValues(LastValuePolicy(["**"], depth=3, max_groups=50, max_bytes=10_000))
    for i in range(2000):
        size = (i * 7919) % 3000
        cache.record(f"g{i % 97}", Cached(Payload(DataType.BINARY, b"x" * size), None, 0.0, (), None))
        assert cache.bytes <= 10_000 and len(cache) <= 50
        assert cache.bytes == sum(len(e.payload.data) + ENTRY_OVERHEAD_BYTES
                                  for g in list(cache._groups) for e in cache._groups[g])


@pytest.mark.parametrize("settings,complaint", [
    (HubSettings(last_value_groups=["a*b*c*d*e*f*"]), "more than 5"),
    (HubSettings(last_value_groups=[""]), "empty"),
    (HubSettings(last_value_groups=["bad\\"]), "must be followed"),
    (HubSettings(last_value_groups=[f"g{i}" for i in range(101)]), "at most 100"),
    (HubSettings(last_value_groups=["g"], last_value_depth=0), "lastValueDepth must be 1 to 100"),
    (HubSettings(last_value_groups=["g"], last_value_depth=101), "lastValueDepth must be 1 to 100"),
    (HubSettings(last_value_groups=["g"], last_value_max_groups=0), "lastValueMaxGroups"),
    (HubSettings(last_value_groups=["g"], last_value_max_bytes=2 * 1024 ** 3), "lastValueMaxBytes"),
])
def test_bad_settings_are_refused(settings, complaint):
    with pytest.raises(ConfigError, match=complaint):
        _check_last_values(settings, "hubs.h")


def test_a_config_file_with_a_wrong_key_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[hubs.h]\nlastValueGroup = ["p.*"]\n')
    with pytest.raises(ConfigError, match="lastValueGroup"):
        fastpush.config.load_config(path)
