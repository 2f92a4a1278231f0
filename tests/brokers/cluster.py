"""The cluster the broker conformance tests act on: node `a` and node `b`.

With the Redis broker they are two nodes on one real Redis server (their own key prefix per
test), so every operation and question crosses between nodes. With the memory broker the cluster
is one node, named both `a` and `b`: each test then states what a single node does, in the same
words.

Waiting follows what the cluster promises:
- a confirmed operation (membership, permissions, closes) is in force on every node it concerns,
  their registry entries written, when `submit` returns: tests assert right after it;
- a connection arriving or leaving is not an operation: `connect` and `disconnect` wait, up to a
  deadline, until every node's answers show it;
- a send is not confirmed: `send` submits it, then a fence (a message to the whole hub from the
  same node) and waits until every connection has the fence. A node's operations reach every node
  in the order it published them, so by then the send is wherever it will ever be.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

from fastpush import ops
from fastpush.node import Node
from fastpush.outcome import resolve
from fastpush.protocol.payload import DataType, Payload
from tests.doubles import FakeConnection
from tests.helpers import eventually

__all__ = ["Cluster", "HUB", "text", "got"]

HUB = "chat"
FENCE = "<fence>"
DEADLINE = 5.0
R = TypeVar("R")


def text(value: str) -> Payload:
    return Payload(DataType.TEXT, value.encode())


def got(conn: FakeConnection) -> list[str]:
    """The texts `conn` was sent, fences left out."""
    return [t for t in conn.texts if not t.startswith(FENCE)]


class Cluster:
    def __init__(self, broker: str, a: Node, b: Node) -> None:
        self.broker = broker
        self.a, self.b = a, b
        self.connected: list[FakeConnection] = []
        self._fences = itertools.count()

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.a,) if self.a is self.b else (self.a, self.b)

    @property
    def single_node(self) -> bool:
        return self.a is self.b

    # --- clients -----------------------------------------------------------------------------
    async def connect(self, node: Node, connection_id: str, user_id: str | None = None,
                      groups: Iterable[str] = (), roles: Iterable[str] = (), hub: str = HUB) -> FakeConnection:
        """A client admitted on `node` as the server admits one: the broker prepares it (the groups
        its user was added to anywhere, subscriptions in force), then the hub registers it with its
        token's groups and those. Returns once every node knows it and its groups."""
        groups = tuple(groups)
        conn = FakeConnection(connection_id, user_id, hub, roles)
        user_groups = await resolve(node.broker.prepare_connection(hub, user_id, groups))
        node.hub(hub).add_connection(conn, (*groups, *user_groups))
        self.connected.append(conn)
        await self.until(ops.ConnectionExists(hub, connection_id), True)
        for group in conn.groups:
            await self.until(ops.GroupMembers(hub, group), lambda members: connection_id in dict(members))
        return conn

    async def disconnect(self, node: Node, conn: FakeConnection) -> None:
        """The client goes away; returns once no node knows it."""
        assert node.hub(conn.hub).remove_connection(conn)
        self.connected.remove(conn)
        await self.until(ops.ConnectionExists(conn.hub, conn.connection_id), False)

    # --- operations and questions -------------------------------------------------------------
    async def submit(self, node: Node, op: ops.Operation[R]) -> R:
        return await resolve(node.submit(op))

    async def send(self, node: Node, op: ops.Operation[None]) -> None:
        """Submit a send from `node` and return once it has reached every connection it will."""
        assert not op.confirmed, "for sends; other operations are confirmed by submit"
        assert await self.submit(node, op) is None
        fence = f"{FENCE}{next(self._fences)}"
        assert await self.submit(node, ops.SendToAll(op.hub, text(fence))) is None
        waiting = [c for c in self.connected if c.hub.lower() == op.hub.lower()]
        if not await eventually(lambda: all(fence in c.texts for c in waiting), DEADLINE):
            pytest.fail(f"the fence did not reach {[c for c in waiting if fence not in c.texts]}")

    async def answers(self, question: ops.Question[R]) -> list[R]:
        """What each node answers, `a` first."""
        return [await resolve(node.ask(question)) for node in self.nodes]

    async def agree(self, question: ops.Question[R]) -> R:
        """The answer every node gives (the test fails if they differ)."""
        answers = await self.answers(question)
        assert all(answer == answers[0] for answer in answers), f"{question}: the nodes answer {answers}"
        return answers[0]

    async def until(self, question: ops.Question[Any], expected: object | Callable[[Any], bool]) -> None:
        """Wait until every node's answer to `question` is `expected` (or passes it, if callable)."""
        def holds(answer: object) -> bool:
            return expected(answer) if callable(expected) else answer == expected

        async def all_hold() -> bool:
            return all(holds(answer) for answer in await self.answers(question))
        if not await eventually(all_hold, DEADLINE):
            pytest.fail(f"{question}: the nodes answer {await self.answers(question)}, not {expected!r}")
