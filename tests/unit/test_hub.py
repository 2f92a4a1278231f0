"""A hub on one node, with no socket and no broker: its members, the groups a user's later
connections join, when it holds nothing (so its Node drops it, and registers it again once it
holds something), and the facts it reports to its Registry: which connection, which group, first
or last local member."""
from __future__ import annotations

import pytest

from fastpush import ops
from fastpush.hub import Hub
from fastpush.node import Node
from fastpush.permissions import Permission
from fastpush.protocol.payload import DataType, Payload
from tests.doubles import FakeConnection, RecordingRegistry

SEND = Permission.SEND_TO_GROUP


@pytest.fixture
def registry() -> RecordingRegistry:
    return RecordingRegistry()


@pytest.fixture
def hub(registry: RecordingRegistry) -> Hub:
    return Hub("chat", registry)


# --- membership --------------------------------------------------------------------------------
def test_a_connection_is_registered_and_joins_its_token_groups(hub, registry):
    conn = FakeConnection("c1", "alice")
    hub.add_connection(conn, ["g", "h"])
    assert hub.connection("c1") is conn and list(hub.connections) == [conn]
    assert conn.groups == {"g", "h"}
    assert hub.tables.group_members("g") == {conn} and hub.tables.user_connections("alice") == {conn}
    assert registry.take() == [("added", "chat", "c1"), ("joined", "chat", "c1", "g", True),
                               ("joined", "chat", "c1", "h", True)]


def test_the_first_and_the_last_local_member_of_a_group_are_reported_so(hub, registry):
    c1, c2 = FakeConnection("c1"), FakeConnection("c2")
    hub.add_connection(c1)
    hub.add_connection(c2)
    registry.take()
    hub.join(c1, "g")
    hub.join(c2, "g")
    hub.leave(c1, "g")
    hub.leave(c2, "g")
    assert registry.take() == [("joined", "chat", "c1", "g", True), ("joined", "chat", "c2", "g", False),
                               ("left", "chat", "c1", "g", False), ("left", "chat", "c2", "g", True)]


def test_joining_twice_or_leaving_a_group_not_joined_reports_nothing(hub, registry):
    conn = FakeConnection("c1")
    hub.add_connection(conn, ["g"])
    registry.take()
    assert hub.join(conn, "g") is None
    hub.leave(conn, "h")
    assert registry.take() == []
    assert conn.groups == {"g"}


def test_a_join_returns_what_the_registry_says_to_await_before_sends_reach_the_member():
    in_force = object()
    hub = Hub("chat", RecordingRegistry(join_result=in_force))
    c1, c2 = FakeConnection("c1"), FakeConnection("c2")
    hub.add_connection(c1)
    hub.add_connection(c2)
    assert hub.join(c1, "g") is in_force  # the first member: this node must subscribe
    assert hub.join(c2, "g") is None  # it already has
    assert hub.join(c1, "g") is None  # already a member


def test_a_connection_removed_leaves_each_group_then_is_reported_gone(hub, registry):
    c1, c2 = FakeConnection("c1", "alice"), FakeConnection("c2")
    hub.add_connection(c1, ["g", "h"])
    hub.add_connection(c2, ["g"])
    registry.take()
    assert hub.remove_connection(c1) is True
    *left, removed = registry.take()
    assert sorted(left) == [("left", "chat", "c1", "g", False), ("left", "chat", "c1", "h", True)]
    assert removed == ("removed", "chat", "c1")
    assert hub.connection("c1") is None and c1.groups == frozenset()
    assert hub.tables.group_members("g") == {c2} and not hub.tables.user_connections("alice")
    assert hub.remove_connection(c1) is False  # not there any more: nothing reported
    assert registry.take() == []


def test_the_census_counts_the_connections_of_the_hubs_sharing_it(hub):
    other = Hub("lobby", RecordingRegistry(), hub.census)
    c1, c2 = FakeConnection("c1"), FakeConnection("c2", hub="lobby")
    hub.add_connection(c1)
    other.add_connection(c2)
    assert hub.census.connections == 2 and hub.connection_count == other.connection_count == 1
    hub.remove_connection(c1)
    hub.remove_connection(c1)
    assert hub.census.connections == 1


# --- a user's groups -----------------------------------------------------------------------------
def test_a_user_s_groups_are_joined_by_its_later_connections(hub):
    assert hub.apply(ops.AddUserToGroup("chat", "alice", "g")) is None
    assert hub.user_groups == {"alice": {"g"}}
    alice, bob, anonymous = FakeConnection("c1", "alice"), FakeConnection("c2", "bob"), FakeConnection("c3")
    for conn in (alice, bob, anonymous):
        hub.add_connection(conn, ["token"])
    assert alice.groups == {"g", "token"} and bob.groups == anonymous.groups == {"token"}


def test_removing_a_user_from_a_group_forgets_the_record_and_the_memberships(hub):
    alice = FakeConnection("c1", "alice")
    hub.add_connection(alice)
    for group in ("g", "h"):
        hub.apply(ops.AddUserToGroup("chat", "alice", group))
    hub.apply(ops.RemoveUserFromGroup("chat", "alice", "g"))
    assert alice.groups == {"h"} and hub.user_groups == {"alice": {"h"}}
    hub.apply(ops.RemoveUserFromGroup("chat", "alice", "h"))
    assert alice.groups == set() and hub.user_groups == {}
    later = FakeConnection("c2", "alice")
    hub.add_connection(later)
    assert later.groups == frozenset()


def test_removing_a_user_from_all_groups_takes_its_token_groups_too(hub):
    alice = FakeConnection("c1", "alice")
    hub.apply(ops.AddUserToGroup("chat", "alice", "g"))
    hub.add_connection(alice, ["token"])
    hub.apply(ops.RemoveUserFromAllGroups("chat", "alice"))
    assert alice.groups == set() and hub.user_groups == {}


# --- permissions -----------------------------------------------------------------------------------
def test_grants_and_revokes_change_the_roles_and_are_reported(hub, registry):
    conn = FakeConnection("c1")
    hub.add_connection(conn)
    registry.take()
    assert hub.apply(ops.GrantPermission("chat", "c1", SEND, "g")) is True
    assert hub.apply(ops.GrantPermission("chat", "nobody", SEND, "g")) is False
    assert hub.answer(ops.HasPermission("chat", SEND, "c1", "g")) is True
    assert hub.apply(ops.RevokePermission("chat", "c1", SEND, "g")) is None
    assert hub.apply(ops.RevokePermission("chat", "nobody", SEND, "g")) is None
    assert hub.answer(ops.HasPermission("chat", SEND, "c1", "g")) is False
    assert registry.take() == [("roles", "chat", "c1", ["webpubsub.sendToGroup.g"]), ("roles", "chat", "c1", [])]


# --- when a hub holds nothing ------------------------------------------------------------------------
def test_a_hub_holds_nothing_without_connections_records_handlers_or_slow_client_closes(hub):
    assert hub.is_empty
    conn = FakeConnection("c1", "alice")
    hub.add_connection(conn)
    assert not hub.is_empty
    hub.remove_connection(conn)
    assert hub.is_empty
    hub.apply(ops.AddUserToGroup("chat", "alice", "g"))
    assert not hub.is_empty
    hub.apply(ops.RemoveUserFromGroup("chat", "alice", "g"))
    assert hub.is_empty
    hub.events = object()  # type: ignore[assignment]  # any handlers at all
    assert not hub.is_empty
    hub.events = None
    hub.slow_client_closes = 1
    assert not hub.is_empty


def test_the_last_connection_leaving_an_otherwise_empty_hub_calls_on_empty(hub):
    emptied: list[Hub] = []
    hub.on_empty = emptied.append
    c1, c2 = FakeConnection("c1", "alice"), FakeConnection("c2")
    hub.add_connection(c1)
    hub.add_connection(c2)
    hub.remove_connection(c1)
    assert emptied == []
    hub.remove_connection(c2)
    assert emptied == [hub]
    hub.apply(ops.AddUserToGroup("chat", "alice", "g"))
    hub.add_connection(c1)
    hub.remove_connection(c1)
    assert emptied == [hub]  # the record for alice's later connections keeps it


def test_a_node_registers_a_hub_while_it_holds_something():
    node = Node()
    hub = node.lookup("Chat")
    assert node.hubs() == [] and node.find("chat") is hub  # held by its caller: found, not registered
    conn = FakeConnection("c1", hub="Chat")
    hub.add_connection(conn)
    node.settle(hub)
    assert node.hubs() == [hub]
    hub.remove_connection(conn)  # on_empty: the node settles it
    assert node.hubs() == [] and node.find("CHAT") is hub
    assert node.hub("chat") is hub and node.hubs() == [hub]  # asked for by name: registered at once


def test_an_operation_registers_a_hub_only_if_it_leaves_something_in_it():
    node = Node()
    assert node.apply(ops.RemoveUserFromGroup("chat", "alice", "g")) is None
    assert node.apply(ops.SendToAll("chat", Payload(DataType.TEXT, b"hi"))) is None
    assert node.hubs() == []
    node.apply(ops.AddUserToGroup("chat", "alice", "g"))
    [hub] = node.hubs()
    assert hub.user_groups == {"alice": {"g"}}
    node.apply(ops.RemoveUserFromAllGroups("Chat", "alice"))
    assert node.hubs() == []


def test_a_dropped_hub_nothing_holds_is_forgotten():
    node = Node()
    node.lookup("chat")  # and let go of at once: no cycle holds a hub, so it is freed here
    assert node.find("chat") is None


def test_the_node_counts_every_hub_s_connections_registered_or_not():
    node = Node()
    c1, c2 = FakeConnection("c1"), FakeConnection("c2", hub="lobby")
    held = node.lookup("chat")
    held.add_connection(c1)
    node.hub("lobby").add_connection(c2)
    assert node.connection_count == 2
    node.hub("lobby").remove_connection(c2)
    assert node.connection_count == 1


def test_questions_about_a_hub_the_node_does_not_have_are_answered_as_for_an_empty_one():
    node = Node()
    assert node.answer(ops.GroupMembers("chat", "g")) == []
    assert node.answer(ops.ConnectionExists("chat", "c1")) is False
    assert node.hubs() == [] and node.find("chat") is None
