"""@azure/web-pubsub-client 1.1.0 and later, unmodified, calling the newer families fastpush does not
support (tests/unit/test_families.py has the messages and their answers): each call fails with an
error the SDK raises, and the connection stays up for the next call. (`invokeEvent` is supported:
tests/compat/test_js_client_invoke.py.)

- `openGroupStream` rejects with the error of the `streamClosed` answer to its stream start (named
  BadRequest, or Forbidden without the role to send to the group), rather than waiting forever for a
  stream ack;
- group state: 1.1.0 can write setGroupState / subscribeGroupState / unsubscribeGroupState messages
  but exposes no method that sends them, so no SDK call can fail there (checked below, so a version
  that adds one shows up here).
"""
from __future__ import annotations

import pytest

from tests.compat.conftest import CLIENT_DRIVERS
from tests.compat.drivers import ACKED, SdkCallError
from tests.helpers import client_url

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
FAMILY_DRIVERS = [d for d in CLIENT_DRIVERS
                  if d.sdk == "js" and tuple(int(p) for p in d.version.split(".")[:2]) >= (1, 1)]


@pytest.fixture(params=FAMILY_DRIVERS, ids=str)
def js_driver(request, _client_drivers_closed):
    return request.param


@pytest.fixture(params=["reliable", "json"])
def protocol(request) -> str:
    return request.param


@pytest.fixture
async def started(js_driver, server, hub_name, protocol):
    """Make and start a client of `claims`; each is let go at the end of the test."""
    made = []

    async def start(**claims):
        client = await js_driver.client(client_url(server, hub_name, **claims), protocol)
        made.append(client)
        await client.start()
        return client

    yield start
    for client in made:
        await client.dispose()


async def still_connected(client) -> None:
    """The connection survived: no event came (a dropped connection emits disconnected), and an
    acked call on the same connection succeeds."""
    assert client.events.empty(), client.events.get_nowait()
    assert await client.send_to_group("room", "after", "text") == ACKED
    assert client.events.empty(), client.events.get_nowait()


async def test_open_group_stream_rejects_with_the_stream_closed_error(started):
    client = await started(user_id="ann", roles=ROLES)
    with pytest.raises(SdkCallError) as failed:
        await client._call("openGroupStream", "room", {"idleTimeoutInMs": 5000})
    assert failed.value.name == "BadRequest" and "not supported" in failed.value.error["message"]
    await still_connected(client)


async def test_open_group_stream_without_the_role_is_forbidden(started):
    client = await started(user_id="ann", roles=["webpubsub.joinLeaveGroup"])
    with pytest.raises(SdkCallError) as failed:
        await client._call("openGroupStream", "room")
    assert failed.value.name == "Forbidden"
    assert await client.join_group("room") == ACKED
    assert client.events.empty()


@pytest.mark.parametrize("method", ["setGroupState", "subscribeGroupState", "unsubscribeGroupState"])
async def test_no_group_state_call_is_exposed(started, method):
    client = await started(user_id="ann", roles=ROLES)
    with pytest.raises(SdkCallError) as failed:
        await client._call(method, "room")
    assert failed.value.name == "TypeError" and "is not a function" in failed.value.error["message"]
