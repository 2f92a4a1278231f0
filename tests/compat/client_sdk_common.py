"""What the Python and JS client SDK tests share: the roles they grant, a plain JSON test client
in a group (Bob), and the group message he should see."""
from __future__ import annotations

from tests.helpers import JSON_V1, Client, connect

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


async def bob_in(server, hub: str, group: str) -> Client:
    """Bob: a json.webpubsub.azure.v1 test client that has joined `group`."""
    bob = await connect(server, hub, JSON_V1, user_id="bob", roles=ROLES)
    assert (await bob.request({"type": "joinGroup", "group": group}))["success"]
    return bob


def group_message(group: str, from_user: str, data_type: str, data) -> dict:
    return {"type": "message", "from": "group", "group": group, "fromUserId": from_user,
            "dataType": data_type, "data": data}
