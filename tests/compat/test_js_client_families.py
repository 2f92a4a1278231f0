"""@azure/web-pubsub-client 1.1.0 and later, unmodified, and the newer family fastpush does not
support, group state (tests/unit/test_families.py has the messages and their answers): 1.1.0 can
write setGroupState / subscribeGroupState / unsubscribeGroupState messages but exposes no method that
sends them, so no SDK call can fail there (checked below, so a version that adds one shows up here).
`invokeEvent` is supported (tests/compat/test_js_client_invoke.py), and so are group streams
(tests/compat/test_js_group_streams.py).
"""
from __future__ import annotations

import pytest

from tests.compat.conftest import CLIENT_DRIVERS
from tests.compat.drivers import SdkCallError
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


@pytest.mark.parametrize("method", ["setGroupState", "subscribeGroupState", "unsubscribeGroupState"])
async def test_no_group_state_call_is_exposed(started, method):
    client = await started(user_id="ann", roles=ROLES)
    with pytest.raises(SdkCallError) as failed:
        await client._call(method, "room")
    assert failed.value.name == "TypeError" and "is not a function" in failed.value.error["message"]
