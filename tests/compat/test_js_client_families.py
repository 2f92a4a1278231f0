"""@azure/web-pubsub-client 1.1.0 and later, unmodified, and the newer family fastpush does not
support, group state (tests/unit/test_families.py has the messages and their answers): 1.1.0 can
write setGroupState / subscribeGroupState / unsubscribeGroupState messages but exposes no method that
sends them, so no SDK call can fail there (checked below, so a version that adds one shows up here).
`invokeEvent` is supported (tests/compat/test_js_client_invoke.py), and so are group streams
(tests/compat/test_js_group_streams.py).
"""
from __future__ import annotations

import pytest

from tests.compat.conftest import JS_1_1_DRIVERS, js_driver_fixture
from tests.compat.drivers import SdkCallError

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
js_driver = js_driver_fixture(JS_1_1_DRIVERS)


@pytest.mark.parametrize("method", ["setGroupState", "subscribeGroupState", "unsubscribeGroupState"])
async def test_no_group_state_call_is_exposed(started, method):
    client = await started(user_id="ann", roles=ROLES)
    with pytest.raises(SdkCallError) as failed:
        await client._call(method, "room")
    assert failed.value.name == "TypeError" and "is not a function" in failed.value.error["message"]
