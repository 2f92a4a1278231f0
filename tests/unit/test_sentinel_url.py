"""`redis+sentinel://` URLs: what they name, and a clear ValueError for each mistake."""
from __future__ import annotations

import re

import pytest

from fastpush.broker.redis.sentinel import MAX_SENTINELS, SENTINEL_PORT, Sentinels, is_sentinel_url
from fastpush.broker.resp import RedisAddress


def test_hosts_ports_and_master_name():
    sentinels = Sentinels.from_url("redis+sentinel://10.0.0.1:26380,sentinel-b,[::1]:5000/my-master")
    assert [(s.host, s.port) for s in sentinels._sentinels] == [("10.0.0.1", 26380), ("sentinel-b", SENTINEL_PORT),
                                                                 ("::1", 5000)]
    assert sentinels.master_name == "my-master"
    assert sentinels._login == RedisAddress("", 0)
    assert sentinels.describe() == "master 'my-master' through Sentinel 10.0.0.1:26380,sentinel-b:26379,::1:5000"


def test_options_log_in_to_the_master_and_to_the_sentinels_apart():
    sentinels = Sentinels.from_url("redis+sentinel://h:1/m?password=p%40ss&username=app&db=3"
                                   "&sentinel_password=s&sentinel_username=watcher")
    assert sentinels._login == RedisAddress("", 0, username="app", password="p@ss", db=3)
    assert sentinels._login.at("10.1.1.1", 6380).hello_commands() == [("AUTH", "app", "p@ss"), ("SELECT", 3)]
    assert sentinels._sentinels[0].hello_commands() == [("AUTH", "watcher", "s")]


def test_the_scheme_is_recognised_in_any_case():
    assert is_sentinel_url("REDIS+SENTINEL://h/m") and not is_sentinel_url("redis://h:6379")


@pytest.mark.parametrize(("url", "words"), [
    ("redis://h:6379", "not a redis+sentinel://"),
    ("redis+sentinel:///m", "name the Sentinels"),
    ("redis+sentinel://h1,,h2/m", "name the Sentinels"),
    ("redis+sentinel://h:1", "name the master"),
    ("redis+sentinel://h:1/", "name the master"),
    ("redis+sentinel://h:1/a%20b", "without spaces"),
    ("redis+sentinel://h:1/a%0Ab", "without spaces"),
    ("redis+sentinel://h:1/" + "m" * 257, "at most 256"),
    ("redis+sentinel://h:99999/m", "not a Sentinel's host[:port]"),
    ("redis+sentinel://h:x/m", "not a Sentinel's host[:port]"),
    ("redis+sentinel://:secret@h:1/m", "passwords as options"),
    ("redis+sentinel://h:1/m?pasword=x", "unknown option 'pasword'"),
    ("redis+sentinel://h:1/m?db=1&db=2", "given twice"),
    ("redis+sentinel://h:1/m?db=-1", "database number"),
    ("redis+sentinel://h:1/m?db=zero", "database number"),
    ("redis+sentinel://" + ",".join(f"h{i}" for i in range(MAX_SENTINELS + 1)) + "/m", f"at most {MAX_SENTINELS}"),
])
def test_mistakes_are_named(url, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Sentinels.from_url(url)
