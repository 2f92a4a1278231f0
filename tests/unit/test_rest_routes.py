"""The REST data plane without a socket: every route of the Azure Web PubSub REST API resolves to
its handler, nothing else does, and each operation answers the status the service documents,
called through `RestApi.handle` on a node with the memory broker and a real KeyRing."""
from __future__ import annotations

import json
import time

import jwt
import pytest

from fastpush.auth.tokens import KeyRing
from fastpush.broker.memory import MemoryBroker
from fastpush.http.messages import Request, Response
from fastpush.http.rest import _ROUTES, RestApi, _match
from fastpush.node import Node
from fastpush.outcome import resolve
from tests.doubles import FakeConnection

# (method, path after /api/hubs/{hub}/, handler, the path's arguments), as the REST reference lists them.
ROUTES = [
    ("POST", ":send", RestApi.send_to_all, []),
    ("POST", ":closeConnections", RestApi.close_all, []),
    ("POST", ":generateToken", RestApi.generate_token, []),
    ("POST", ":addToGroups", RestApi.add_to_groups, []),
    ("POST", ":removeFromGroups", RestApi.remove_from_groups, []),
    ("HEAD", "connections/c1", RestApi.connection_exists, ["c1"]),
    ("DELETE", "connections/c1", RestApi.close_connection, ["c1"]),
    ("POST", "connections/c1/:send", RestApi.send_to_connection, ["c1"]),
    ("DELETE", "connections/c1/groups", RestApi.remove_connection_from_all_groups, ["c1"]),
    ("HEAD", "groups/g", RestApi.group_exists, ["g"]),
    ("POST", "groups/g/:closeConnections", RestApi.close_group, ["g"]),
    ("POST", "groups/g/:send", RestApi.send_to_group, ["g"]),
    ("GET", "groups/g/connections", RestApi.list_group_connections, ["g"]),
    ("PUT", "groups/g/connections/c1", RestApi.add_connection_to_group, ["g", "c1"]),
    ("DELETE", "groups/g/connections/c1", RestApi.remove_connection_from_group, ["g", "c1"]),
    ("PUT", "permissions/sendToGroup/connections/c1", RestApi.grant_permission, ["sendToGroup", "c1"]),
    ("DELETE", "permissions/sendToGroup/connections/c1", RestApi.revoke_permission, ["sendToGroup", "c1"]),
    ("HEAD", "permissions/sendToGroup/connections/c1", RestApi.check_permission, ["sendToGroup", "c1"]),
    ("HEAD", "users/alice", RestApi.user_exists, ["alice"]),
    ("POST", "users/alice/:closeConnections", RestApi.close_user, ["alice"]),
    ("POST", "users/alice/:send", RestApi.send_to_user, ["alice"]),
    ("DELETE", "users/alice/groups", RestApi.remove_user_from_all_groups, ["alice"]),
    ("PUT", "users/alice/groups/g", RestApi.add_user_to_group, ["alice", "g"]),
    ("DELETE", "users/alice/groups/g", RestApi.remove_user_from_group, ["alice", "g"]),
    ("GET", "groups/g/lastValue", RestApi.last_value, ["g"]),  # fastpush's own (the last-value cache)
]


# --- routing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path,handler,args", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_each_route_resolves_to_its_handler(method, path, handler, args):
    assert _match(method, path.split("/")) == (handler, args)


def test_the_table_has_no_route_the_reference_does_not():
    assert len(_ROUTES) == len(ROUTES)
    assert {handler for _, _, handler in _ROUTES} == {handler for _, _, handler, _ in ROUTES}


@pytest.mark.parametrize("method,segments,handler,args", [
    ("HEAD", ["groups", "connections"], RestApi.group_exists, ["connections"]),
    ("POST", ["groups", ":send", ":send"], RestApi.send_to_group, [":send"]),
    ("PUT", ["users", "groups", "groups", "users"], RestApi.add_user_to_group, ["groups", "users"]),
    ("HEAD", ["connections", "a/b"], RestApi.connection_exists, ["a/b"]),  # `a%2Fb`, decoded: one segment
])
def test_an_argument_may_be_named_like_a_path_word(method, segments, handler, args):
    assert _match(method, segments) == (handler, args)


@pytest.mark.parametrize("method,path", [
    ("GET", ":send"), ("POST", ""), ("POST", ":sendd"), ("POST", "send"), ("POST", ":Send"),
    ("PATCH", "connections/c1"), ("GET", "connections/c1"), ("HEAD", "connections"),
    ("HEAD", "connections/c1/x"), ("PUT", "groups/g/connections"), ("POST", "groups/g"),
    ("DELETE", "users/alice/groups/g/x"), ("HEAD", "Users/alice"), ("head", "users/alice"),
    ("PUT", "permissions/sendToGroup/connections"), ("OPTIONS", ":send"),
])
def test_unknown_paths_and_methods_resolve_to_nothing(method, path):
    assert _match(method, path.split("/") if path else []) is None


# --- RestApi.handle ----------------------------------------------------------------------------------
KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
ORIGIN = "http://localhost:8080"


class Rest:
    """A node with the memory broker holding `c1` (user alice, in group g, may join and leave any
    group) in hub `chat`, and its REST API, called with requests built as the front door builds them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.api = RestApi(node, KeyRing(KEY), lambda: ORIGIN)
        self.conn = FakeConnection("c1", "alice", roles=["webpubsub.joinLeaveGroup"])
        node.hub("chat").add_connection(self.conn, ["g"])

    async def call(self, method: str, path: str, body: bytes = b"", *, hub: str = "chat", key: str | None = KEY,
                   content_type: str = "text/plain") -> Response:
        target = f"/api/hubs/{hub}/{path}"
        target += ("&" if "?" in target else "?") + "api-version=2024-12-01"
        headers = {"host": "localhost:8080", "content-type": content_type}
        if key is not None:
            token = jwt.encode({"aud": ORIGIN + target, "exp": int(time.time()) + 60}, key.encode(), algorithm="HS256")
            headers["authorization"] = f"Bearer {token}"
        return await resolve(self.api.handle(Request(method, target, headers, body)))


@pytest.fixture
async def rest():
    node = Node(MemoryBroker())
    await node.start()
    yield Rest(node)
    await node.stop()


def groups_body(*groups: str, filter: str | None = None) -> bytes:
    return json.dumps({"groups": list(groups), **({"filter": filter} if filter else {})}).encode()


@pytest.mark.parametrize("method,path,body,status", [
    # sends: accepted
    ("POST", ":send", b"hi", 202),
    ("POST", ":send?excluded=c1&filter=userId%20eq%20'alice'", b"hi", 202),
    ("POST", "groups/g/:send", b"hi", 202),
    ("POST", "users/alice/:send", b"hi", 202),
    ("POST", "connections/c1/:send", b"hi", 202),
    # existence: 200 or 404
    ("HEAD", "connections/c1", b"", 200),
    ("HEAD", "connections/nobody", b"", 404),
    ("HEAD", "groups/g", b"", 200),
    ("HEAD", "groups/empty", b"", 404),
    ("HEAD", "users/alice", b"", 200),
    ("HEAD", "users/nobody", b"", 404),
    ("HEAD", "permissions/joinLeaveGroup/connections/c1?targetName=g", b"", 200),
    ("HEAD", "permissions/sendToGroup/connections/c1?targetName=g", b"", 404),
    ("HEAD", "permissions/joinLeaveGroup/connections/nobody", b"", 404),
    # adds and grants: 200, or 404 for a connection that is not there
    ("PUT", "groups/h/connections/c1", b"", 200),
    ("PUT", "groups/h/connections/nobody", b"", 404),
    ("PUT", "permissions/sendToGroup/connections/c1?targetName=g", b"", 200),
    ("PUT", "permissions/sendToGroup/connections/nobody", b"", 404),
    ("PUT", "users/alice/groups/h", b"", 200),
    ("POST", ":addToGroups", groups_body("h", filter="userId eq 'alice'"), 200),
    ("POST", ":removeFromGroups", groups_body("g"), 200),
    # removals, revokes and closes: 204, whether or not there was anything to remove
    ("DELETE", "groups/g/connections/c1", b"", 204),
    ("DELETE", "groups/g/connections/nobody", b"", 204),
    ("DELETE", "connections/c1/groups", b"", 204),
    ("DELETE", "users/alice/groups/g", b"", 204),
    ("DELETE", "users/alice/groups", b"", 204),
    ("DELETE", "permissions/sendToGroup/connections/c1", b"", 204),
    ("DELETE", "connections/c1", b"", 204),
    ("DELETE", "connections/nobody", b"", 204),
    ("POST", ":closeConnections", b"", 204),
    ("POST", "groups/g/:closeConnections", b"", 204),
    ("POST", "users/alice/:closeConnections", b"", 204),
    # listing and tokens
    ("GET", "groups/g/connections", b"", 200),
    ("POST", ":generateToken?userId=bob", b"", 200),
    # bad names: 400
    ("POST", "groups/%20/:send", b"hi", 400),
    ("HEAD", "groups/%20%20", b"", 400),
    ("PUT", "groups/%20/connections/c1", b"", 400),
    ("DELETE", "users/alice/groups/%20", b"", 400),
    ("PUT", "permissions/sendToGroup/connections/c1?targetName=%20", b"", 400),
    ("POST", ":addToGroups", groups_body(" "), 400),
    ("PUT", "permissions/sendAll/connections/c1", b"", 400),
    ("POST", ":send?filter=userId%20eq", b"hi", 400),
    # nothing there: 404 before any token is read
    ("POST", "groups/g/:publish", b"hi", 404),
], ids=lambda value: value.decode()[:20] if isinstance(value, bytes) else str(value))
async def test_each_operation_answers_its_documented_status(rest, method, path, body, status):
    response = await rest.call(method, path, body,
                               content_type="application/json" if body.startswith(b"{") else "text/plain")
    assert response.status == status, response.body
    if status >= 400 and method != "HEAD":
        assert set(json.loads(response.body)) == {"code", "message"}


async def test_a_bad_hub_name_is_refused(rest):
    assert (await rest.call("POST", ":send", b"hi", hub="1hub")).status == 400


@pytest.mark.parametrize("key", [None, "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210ZYXWVUTS"], ids=["no token", "wrong key"])
async def test_a_request_without_a_valid_token_is_refused_and_does_nothing(rest, key):
    response = await rest.call("DELETE", "connections/c1", key=key)
    assert response.status == 401 and json.loads(response.body)["code"] == "Unauthorized"
    assert rest.conn.closes == []


async def test_a_token_for_another_url_is_refused(rest):
    token = jwt.encode({"aud": ORIGIN + "/api/hubs/chat/:send", "exp": int(time.time()) + 60}, KEY.encode(),
                       algorithm="HS256")
    request = Request("DELETE", "/api/hubs/chat/connections/c1", {"host": "localhost:8080",
                                                                   "authorization": f"Bearer {token}"})
    assert (await resolve(rest.api.handle(request))).status == 401
    assert rest.conn.closes == []


async def test_the_operations_take_effect(rest):
    conn = rest.conn
    assert (await rest.call("POST", "groups/g/:send", b"to g")).status == 202
    assert conn.texts == ["to g"]
    assert (await rest.call("PUT", "groups/h/connections/c1", b"")).status == 200
    assert conn.groups == {"g", "h"}
    response = await rest.call("GET", "groups/h/connections")
    assert json.loads(response.body) == {"value": [{"connectionId": "c1", "userId": "alice"}]}
    assert (await rest.call("PUT", "permissions/sendToGroup/connections/c1?targetName=h")).status == 200
    assert "webpubsub.sendToGroup.h" in conn.roles
    assert (await rest.call("DELETE", "connections/c1?reason=bye")).status == 204
    assert conn.closes == [(1000, "bye", True)]
