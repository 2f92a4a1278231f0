"""REST operations the Python SDK does not expose (bulk group changes by filter, :generateToken),
older api-versions, and paging details, called over plain HTTP."""
from __future__ import annotations

import json

import jwt
import websockets

from tests.helpers import JSON_V1, connect
from tests.server.test_bad_input import acall


async def test_add_and_remove_connections_to_groups_by_filter(server, hub_name):
    alice = await connect(server, hub_name, JSON_V1, user_id="alice")
    bob = await connect(server, hub_name, JSON_V1, user_id="bob")
    body = json.dumps({"groups": ["g1", "g2"], "filter": "userId eq 'alice'"}).encode()
    status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/:addToGroups?api-version=2024-12-01", body,
                            content_type="application/json")
    assert status == 200
    hub = server.server.hub(hub_name)
    assert await server.acall(hub.list_connections, "g1") == [{"connectionId": alice.connection_id, "userId": "alice"}]
    body = json.dumps({"groups": ["g1"]}).encode()  # no filter: every connection of the hub
    status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/:removeFromGroups?api-version=2024-12-01", body,
                            content_type="application/json")
    assert status == 200
    assert not await server.acall(hub.group_exists, "g1")
    assert await server.acall(hub.group_exists, "g2")
    status, err = await acall(server, "POST", f"/api/hubs/{hub_name}/:addToGroups?api-version=2024-12-01",
                              b'{"groups": []}', content_type="application/json")
    assert status == 400 and "groups" in err["message"]
    await bob.expect_silence(0.05)


async def test_generate_token(server, hub_name):
    target = (f"/api/hubs/{hub_name}/:generateToken?userId=gen&role=webpubsub.sendToGroup"
              f"&group=g1&group=g2&minutesToExpire=5&api-version=2024-12-01&clientType=Default")
    status, body = await acall(server, "POST", target)
    assert status == 200
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "gen" and claims["webpubsub.group"] == ["g1", "g2"]
    assert claims["exp"] - claims["iat"] == 300
    url = "ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}?access_token={body['token']}"
    async with websockets.connect(url, subprotocols=[JSON_V1]) as ws:
        assert json.loads(await ws.recv())["userId"] == "gen"
    status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/:generateToken?minutesToExpire=0")
    assert status == 400


async def test_older_api_versions_are_accepted(server, hub_name):
    client = await connect(server, hub_name)
    for version in ("2021-10-01", "2022-11-01", "2023-07-01", "2024-01-01"):
        status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?api-version={version}", version.encode())
        assert status == 202
        assert await client.recv() == version
    status, body = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?api-version=latest", b"x")
    assert status == 400 and "api-version" in body["message"]


async def test_paging_follows_next_link(server, hub_name):
    clients = [await connect(server, hub_name, JSON_V1, groups=["p"]) for _ in range(5)]
    seen, target = [], f"/api/hubs/{hub_name}/groups/p/connections?maxpagesize=2&api-version=2024-12-01"
    while target:
        status, page = await acall(server, "GET", target)
        assert status == 200 and len(page["value"]) <= 2
        seen += [m["connectionId"] for m in page["value"]]
        target = page.get("nextLink")
    assert sorted(seen) == sorted(c.connection_id for c in clients)
    status, page = await acall(server, "GET", f"/api/hubs/{hub_name}/groups/p/connections?top=3&maxpagesize=2")
    status, rest = await acall(server, "GET", page["nextLink"])
    assert len(page["value"]) + len(rest["value"]) == 3 and "nextLink" not in rest
    status, _ = await acall(server, "GET", f"/api/hubs/{hub_name}/groups/p/connections?maxpagesize=201")
    assert status == 400


async def test_group_names_with_slashes_and_spaces(server, hub_name):
    client = await connect(server, hub_name, JSON_V1, groups=["group 1/x"])
    status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/groups/group%201%2Fx/:send", b"slashed")
    assert status == 202
    assert (await client.recv())["group"] == "group 1/x"
