"""Wildcard group roles against hostile group names: the pattern comes from the token's signer,
the group name from the client, so matching must never backtrack (a regular expression for
`*a*a*a*a*a` against 1,023 `a`s and a `b` would hold the event loop for minutes)."""
from __future__ import annotations

import asyncio

from tests.helpers import JSON_V1, connect
from tests.security.conftest import assert_still_serving


async def test_a_group_name_built_to_backtrack_is_answered_at_once(server, hub_name):
    roles = ["webpubsub.sendToGroups.*a*a*a*a*a", "webpubsub.joinLeaveGroups.**a**a*"]
    client = await connect(server, hub_name, JSON_V1, roles=roles)
    hostile = "a" * 1023 + "b"
    sent = await asyncio.wait_for(client.request({"type": "sendToGroup", "group": hostile, "data": "x"}), 10)
    assert sent["success"] is False and sent["error"]["name"] == "Forbidden", sent
    joined = await asyncio.wait_for(client.request({"type": "joinGroup", "group": "a." * 511 + "a"}), 10)
    assert joined["success"] is True, joined  # `**a**a*` matches across the dots
    await client.close()
    await assert_still_serving(server)
