"""The plain counters behind /metrics: histogram buckets as Prometheus reads `le`, labels taken
from fixed lists, and every refusal fastpush.reliable can give named by its own reason."""
from __future__ import annotations

import os
import re
import resource
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastpush import reliable
from fastpush.metrics.collector import ServerCollector, _buckets, make_registry
from fastpush.metrics.counters import Counters, Histogram, close_code_label, recovery_refusal_reason
from fastpush.metrics.process import ProcessCollector
from fastpush.protocol.json_protocol import JoinGroup, Ping


def test_a_value_on_a_bound_falls_in_that_bucket():
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0):
        histogram.observe(seconds)
    assert histogram.counts == [2, 2, 1]
    assert histogram.total == pytest.approx(4.65)
    assert _buckets(histogram.bounds, histogram.counts) == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]


@pytest.mark.parametrize("code, label", [(None, "1006"), (1000, "1000"), (1013, "1013"), (1015, "1015"),
                                         (999, "other"), (1016, "other"), (3000, "other"), (4999, "other")])
def test_close_codes_become_a_few_labels(code, label):
    assert close_code_label(code) == label


def _session(**fields):
    base = {"keep_session": True, "replay_overflowed": False, "subprotocol": "json.reliable.webpubsub.azure.v1",
            "reconnection_token": "current", "previous_token": "previous"}
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize("session, token, subprotocol, reason", [
    (_session(keep_session=False), "current", "json.reliable.webpubsub.azure.v1", "ended"),
    (_session(replay_overflowed=True), "current", "json.reliable.webpubsub.azure.v1", "buffer_overflowed"),
    (_session(), "current", "protobuf.reliable.webpubsub.azure.v1", "wrong_subprotocol"),
    (_session(), "forged", "json.reliable.webpubsub.azure.v1", "bad_token"),
    (_session(), None, "json.reliable.webpubsub.azure.v1", "bad_token"),
])
def test_every_refusal_of_a_local_session_has_its_reason(session, token, subprotocol, reason):
    text = reliable.refusal(session, token, subprotocol)
    assert text is not None and recovery_refusal_reason(text) == reason


@pytest.mark.parametrize("text, reason", [
    ("The session to recover was not found.", "not_found"),
    ("The session to recover was not found, or its token did not match.", "not_found"),
    ("The cluster broker (Redis) is unavailable: lost the connection to Redis", "broker_unavailable"),
])
def test_the_servers_own_refusals_have_their_reason(text, reason):
    assert recovery_refusal_reason(text) == reason


def test_the_collector_output_parses_and_names_message_types():
    counters = Counters()
    counters.client_message(JoinGroup("g", None))
    counters.client_message(Ping())
    counters.client_message(None)
    counters.raw_message()
    counters.connected("json.webpubsub.azure.v1", recovered=False)
    counters.connected("json.reliable.webpubsub.azure.v1", recovered=True)
    counters.upstream_event("my-own-event", "timeout", 20.0)
    counters.rest_request("send_to_all", 202, 0.002)
    health = {"broker": "memory", "healthy": True}
    text = generate_latest(ServerCollector(list, lambda: health, (), counters)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("fastpush_client_messages_total", (("type", "joinGroup"),))] == 1
    assert samples[("fastpush_client_messages_total", (("type", "ping"),))] == 1
    assert samples[("fastpush_client_messages_total", (("type", "invalid"),))] == 1
    assert samples[("fastpush_client_messages_total", (("type", "raw"),))] == 1
    assert samples[("fastpush_client_messages_total", (("type", "sequenceAck"),))] == 0
    assert samples[("fastpush_connects_total", (("subprotocol", "json.webpubsub.azure.v1"),))] == 1
    assert samples[("fastpush_connects_total", (("subprotocol", "raw"),))] == 0
    assert samples[("fastpush_recoveries_total", (("outcome", "succeeded"), ("reason", "none")))] == 1
    assert samples[("fastpush_upstream_events_total", (("event", "user"), ("outcome", "timeout")))] == 1
    assert samples[("fastpush_upstream_event_duration_seconds_bucket", (("event", "user"), ("le", "10.0")))] == 0
    assert samples[("fastpush_upstream_event_duration_seconds_bucket", (("event", "user"), ("le", "20.0")))] == 1
    assert samples[("fastpush_rest_request_duration_seconds_count", (("operation", "send_to_all"),))] == 1


def test_the_readme_lists_every_metric_a_scrape_gives():
    """Every family a server's registry yields has its row in the README's metrics table, and
    every row names one it yields."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`([a-z_]+)`", row.split(" | ", 1)[0])}
    registry = make_registry(list, lambda: {"broker": "memory", "healthy": True})
    families = {family.name + ("_total" if family.type == "counter" else "") for family in registry.collect()}
    assert listed == families


def test_the_process_collector_counts_open_files_without_listing_them():
    """The count /proc/self/fd's size gives is the number of descriptors the process holds."""
    extra = [socket.socket() for _ in range(300)]
    try:
        samples = {s.name: s.value for family in ProcessCollector().collect() for s in family.samples}
        listed = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own descriptor
    finally:
        for sock in extra:
            sock.close()
    assert samples["process_open_fds"] == listed
    assert samples["process_resident_memory_bytes"] > 0 and samples["process_cpu_seconds_total"] > 0
    assert samples["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
