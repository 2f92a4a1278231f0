"""What the hub view shows, read from this node's hubs: the hub list, one hub's connections and
its groups, a page at a time.

A page is an offset into the hub's own tables (in the order entries were made), so asking for
one costs the entries skipped plus the page, walked in C by itertools.islice: well under a
millisecond at 100,000 connections (benches/dashboard_pages.py measures it). Entries that come
and go between two pages shift the later ones; nothing is sorted or copied per request.
"""
from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from typing import Final, TypeVar

from ..fanout import Connection
from ..hub import Hub

__all__ = ["DEFAULT_PAGE", "MAX_HUBS_LISTED", "MAX_PAGE", "SHOWN_GROUPS", "connection_page", "group_page",
           "hub_list"]

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200  # rows of one page of connections or groups
MAX_HUBS_LISTED: Final = 500  # hubs in the list (the most connected first); the total is given beside
SHOWN_GROUPS: Final = 20  # a connection's groups shown in its row (the count says how many it has)

T = TypeVar("T")


def hub_list(hubs: list[Hub]) -> dict[str, object]:
    listed = sorted(hubs, key=lambda h: (-h.connection_count, h.name.lower()))[:MAX_HUBS_LISTED]
    rows = [{"name": hub.name, "connections": hub.connection_count, "groups": len(hub.tables.groups),
             "users": len(hub.tables.users), "slowClientCloses": hub.slow_client_closes} for hub in listed]
    return {"hubs": rows, "total": len(hubs)}


def connection_page(hub: Hub, offset: int, limit: int, *, user: str | None = None,
                    group: str | None = None) -> dict[str, object]:
    """One page of the hub's connections: all of them, or one user's, or one group's members."""
    source: Collection[Connection]
    if user is not None:
        source = hub.tables.user_connections(user)
    elif group is not None:
        source = hub.tables.group_members(group)
    else:
        source = hub.connections
    rows = [_row(conn) for conn in _page(source, offset, limit)]
    return {"connections": rows, "offset": offset, "total": len(source)}


def group_page(hub: Hub, offset: int, limit: int) -> dict[str, object]:
    groups = hub.tables.groups
    rows = [{"name": name, "members": len(members)} for name, members in _page(groups.items(), offset, limit)]
    return {"groups": rows, "offset": offset, "total": len(groups)}


def _page(entries: Iterable[T], offset: int, limit: int) -> list[T]:
    return list(itertools.islice(entries, offset, offset + limit))


def _row(conn: Connection) -> dict[str, object]:
    groups = conn.groups
    transport = conn.transport
    in_socket = 0
    if transport is not None and not transport.is_disconnected:
        in_socket = transport.underlying_transport.get_write_buffer_size()
    age = getattr(conn, "connected_seconds", 0.0)
    return {"connectionId": conn.connection_id, "userId": conn.user_id, "subprotocol": conn.subprotocol,
            "groups": sorted(itertools.islice(groups, SHOWN_GROUPS)), "groupCount": len(groups),
            "ageSeconds": round(age, 1), "queuedBytes": conn.queued_bytes + in_socket,
            "connected": transport is not None and not transport.is_disconnected,
            "address": getattr(conn, "address", None)}
