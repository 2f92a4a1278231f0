"""After a scripted workload on a real `fastpush serve` process (the official Python SDKs connect,
join and send; REST sends to a hub, a group and a user; a client too slow is closed; a reliable
client recovers and another's recovery is refused; an event handler fails), /metrics says exactly
what happened: every series of every family below is compared, none may be missing or extra.

The server is a process of its own, so its counters start at zero and count nothing but this
workload; it runs on whichever fan-out FASTPUSH_NO_EXTENSIONS chooses (fastpush_build_info says
which). The workload is scraped on the key-less --metrics-address listener and, once, on the
public port with the access key."""
from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest
import websockets
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cli_process import ServeProcess
from tests.compat.drivers.python_client import PythonClientDriver, python_client_versions
from tests.conftest import ACCESS_KEY
from tests.events.upstream_server import Answer, Upstream
from tests.helpers import JSON_RELIABLE_V1, ServerView, client_url
from tests.metrics_client import Scraper, series, value

HUB = "mhub"
SLOW_PAYLOAD = 60_000  # bytes of text: a 60,004-byte raw frame (4-byte header)
SLOW_FRAME = SLOW_PAYLOAD + 4
SLOW_SENDS_MAX = 2_000  # bound on the sends it takes to overflow the kernel's buffers and the 64 KiB queue
SUBPROTOCOLS = ("raw", "json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1",
                "protobuf.reliable.webpubsub.azure.v1")
MESSAGE_TYPES = ("sendToGroup", "joinGroup", "leaveGroup", "event", "ping", "sequenceAck", "invoke", "streamStart",
                 "stream", "groupState", "other", "raw", "invalid")


class _Served:
    """`fastpush serve` with a key-less metrics listener; its log is read (so its pipe never fills)."""

    def __init__(self, config: Path):
        self.serve = ServeProcess("--metrics-address", "0", "--max-outbound-bytes", "65536", "--config", str(config),
                                  env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
        line = next(line for line in self.serve.output if "metrics on http://" in line)
        self.metrics_url = line.split("metrics on ", 1)[1].split()[0]
        threading.Thread(target=self._drain, daemon=True).start()
        self.view = ServerView(self.serve.connection_string.split(";")[0].split("=", 1)[1], ACCESS_KEY)

    def _drain(self) -> None:
        for line in self.serve.proc.stdout:
            self.serve.output.append(line)

    def service(self) -> WebPubSubServiceClient:
        return WebPubSubServiceClient.from_connection_string(self.serve.connection_string, hub=HUB)


@pytest.fixture
def upstream():
    handler = Upstream([ACCESS_KEY])
    handler.answers["connected"] = Answer(500, b"the application server is down")
    yield handler
    handler.close()


@pytest.fixture
def served(tmp_path, upstream):
    config = tmp_path / "fastpush.toml"
    config.write_text(f'[[hubs.upfail.eventHandlers]]\nurlTemplate = "{upstream.url_template()}"\n'
                      f'systemEvents = ["connected"]\n')
    running = _Served(config)
    yield running
    running.serve.stop(2)


async def _sdk_clients(served: _Served) -> dict[str, object]:
    """Three clients of the official Python client SDK, json.webpubsub.azure.v1 (whose only
    messages are the ones the test makes: no timed sequence acks), started."""
    driver = PythonClientDriver(python_client_versions()[0])
    roles = ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"]
    clients = {"ann": await driver.client(client_url(served.view, HUB, user_id="ann", groups=["g"]), "json"),
               "bob": await driver.client(client_url(served.view, HUB, user_id="bob", groups=["g"], roles=roles),
                                          "json"),
               "cat": await driver.client(client_url(served.view, HUB, user_id="cat", roles=roles), "json")}
    for client in clients.values():
        await client.start()
    return clients


async def _slow_client(served: _Served, scraper: Scraper) -> tuple[int, int]:
    """A raw client that stops reading while its group is sent 60 KB messages, until the server
    closes it (1013). Returns (sends made, frames the client read before the close frame)."""
    slow = await websockets.connect(client_url(served.view, HUB, user_id="slow", groups=["slow"]), max_size=None)
    slow.transport.pause_reading()
    service = served.service()
    sends = 0
    while True:
        for _ in range(20):
            await asyncio.to_thread(service.send_to_group, "slow", "s" * SLOW_PAYLOAD, content_type="text/plain")
            sends += 1
        if value(await scraper.scrape(), "fastpush_slow_client_closes_total") == 1:
            break
        assert sends < SLOW_SENDS_MAX, "the client was never closed as too slow"
    slow.transport.resume_reading()
    read = 0
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frame = await asyncio.wait_for(slow.recv(), 10)
            assert len(frame) == SLOW_PAYLOAD
            read += 1
    assert closed.value.rcvd.code == 1013
    return sends, read


async def test_the_scraped_counters_are_what_happened(served, upstream):
    scraper = Scraper(served.metrics_url)
    service = served.service()

    # 1. Three SDK clients; REST sends to the hub, to group g (ann, bob), to user cat; cat joins a
    #    group and bob sends to g (ann and bob receive it: no noEcho).
    clients = await _sdk_clients(served)
    await asyncio.to_thread(service.send_to_all, "to all", content_type="text/plain")
    await asyncio.to_thread(service.send_to_group, "g", "to g", content_type="text/plain")
    await asyncio.to_thread(service.send_to_user, "cat", "to cat", content_type="text/plain")
    await clients["cat"].join_group("h")
    await clients["bob"].send_to_group("g", "from bob", "text")
    received = {name: [(await c.message()).data for _ in range(count)]
                for (name, c), count in zip(clients.items(), (3, 3, 2), strict=True)}
    assert received == {"ann": ["to all", "to g", "from bob"], "bob": ["to all", "to g", "from bob"],
                        "cat": ["to all", "to cat"]}
    for client in clients.values():
        await client.stop()

    # 2. A raw client of a hub whose `connected` handler answers 500: one failed upstream event.
    failing = await websockets.connect(client_url(served.view, "upfail"))
    await scraper.until(lambda s: value(s, "fastpush_upstream_events_total", event="connected",
                                        outcome="status_5xx") == 1)
    await failing.close()

    # 3. A client too slow to read its group's messages.
    slow_sends, slow_read = await _slow_client(served, scraper)

    # 4. A reliable client drops and recovers; a recovery with a wrong token is refused.
    url = client_url(served.view, HUB, user_id="rel")
    reliable = await websockets.connect(url, subprotocols=[JSON_RELIABLE_V1])
    hello = json.loads(await reliable.recv())
    await asyncio.to_thread(service.send_to_user, "rel", "first", content_type="text/plain")
    assert json.loads(await reliable.recv())["sequenceId"] == 1
    reliable.transport.abort()
    await scraper.until(lambda s: value(s, "fastpush_reliable_sessions_waiting", hub=HUB) == 1)
    await asyncio.to_thread(service.send_to_user, "rel", "while away", content_type="text/plain")
    recovery = (f"{url}&awps_connection_id={hello['connectionId']}"
                f"&awps_reconnection_token={hello['reconnectionToken']}")
    back = await websockets.connect(recovery, subprotocols=[JSON_RELIABLE_V1])
    assert json.loads(await back.recv())["connectionId"] == hello["connectionId"]
    assert [json.loads(await back.recv())["data"] for _ in range(2)] == ["first", "while away"]  # resent
    forged = await websockets.connect(recovery.replace(hello["reconnectionToken"], "forged"),
                                      subprotocols=[JSON_RELIABLE_V1])
    with pytest.raises(websockets.ConnectionClosed) as refused:
        await asyncio.wait_for(forged.recv(), 10)
    assert refused.value.rcvd.code == 1008
    await back.close()

    # 5. A handshake without a valid token, and a REST call signed with another key.
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"ws{served.view.endpoint[4:]}/client/hubs/{HUB}?access_token=nonsense")
    stranger = WebPubSubServiceClient.from_connection_string(
        f"Endpoint={served.view.endpoint};AccessKey=another-key-of-the-right-length-0123456789;Version=1.0;", hub=HUB)
    with pytest.raises(HttpResponseError) as unauthorized:
        await asyncio.to_thread(stranger.send_to_all, "nope", content_type="text/plain")
    assert unauthorized.value.status_code == 401

    # Every session has ended once 6 disconnects are counted (SDK clients 3, upfail, slow, reliable).
    samples = await scraper.until(lambda s: sum(series(s, "fastpush_disconnects_total").values()) == 6)
    public = Scraper(served.view.endpoint + "/metrics", ACCESS_KEY)
    scrapes_before = scraper.scrapes
    samples = await public.scrape()  # the last one, with the access key on the public port

    delivered_slow = slow_read + round(value(samples, "fastpush_slow_client_dropped_bytes_total") / SLOW_FRAME)
    assert value(samples, "fastpush_slow_client_dropped_bytes_total") % SLOW_FRAME == 0
    expected = {
        "fastpush_connects_total": {("subprotocol", sp): n for sp, n in zip(
            SUBPROTOCOLS, (2, 3, 1, 0, 0), strict=True)},
        "fastpush_disconnects_total": {("code", "1000"): 5, ("code", "1013"): 1},
        "fastpush_client_messages_total": {("type", t): {"joinGroup": 1, "sendToGroup": 1}.get(t, 0)
                                           for t in MESSAGE_TYPES},
        "fastpush_refused_handshakes_total": {("status", "401"): 1},
        "fastpush_recoveries_total": {(("outcome", "succeeded"), ("reason", "none")): 1,
                                      (("outcome", "refused"), ("reason", "bad_token")): 1},
        "fastpush_rest_requests_total": {
            (("operation", "send_to_all"), ("status", "202")): 1,
            (("operation", "send_to_all"), ("status", "401")): 1,
            (("operation", "send_to_group"), ("status", "202")): 1 + slow_sends,
            (("operation", "send_to_user"), ("status", "202")): 3,
            (("operation", "metrics"), ("status", "200")): scrapes_before},
        "fastpush_broadcasts_total": {(): 4 + slow_sends + 2},
        "fastpush_deliveries_total": {(): 8 + delivered_slow + 1},
        "fastpush_fanout_duration_seconds_count": {(): 4 + slow_sends + 2},
        "fastpush_slow_client_closes_total": {(): 1},
        "fastpush_upstream_events_total": {(("event", "connected"), ("outcome", "status_5xx")): 1},
        "fastpush_upstream_event_duration_seconds_count": {("event", "connected"): 1},
        "fastpush_broker_up": {("broker", "memory"): 1},
        "fastpush_reliable_sessions_waiting": {("hub", HUB): 0, ("hub", "upfail"): 0},
    }
    fanout = "python" if os.environ.get("FASTPUSH_NO_EXTENSIONS") == "1" else "compiled"
    assert next(iter(series(samples, "fastpush_build_info"))) >= {("fanout", fanout)}
    for name, wanted in expected.items():
        got = {_key(labels): v for labels, v in series(samples, name).items()}
        assert got == {_key(k): v for k, v in wanted.items()}, name
    assert sum(series(samples, "fastpush_connections").values()) == 0
    assert value(samples, "process_resident_memory_bytes") > 0 and value(samples, "process_open_fds") > 0


def _key(labels) -> frozenset:
    """Labels as a frozenset of pairs, from (name, value), ((name, value), ...), () or a frozenset."""
    if isinstance(labels, frozenset):
        return labels
    if labels and isinstance(labels[0], str):
        return frozenset([labels])
    return frozenset(labels)
