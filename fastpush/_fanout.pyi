"""Python view of the compiled hot path (fastpush/_fanout.pyx); see _fanout.pxd for the design."""
from collections.abc import Callable, Iterable
from typing import Any

from picows import WSListener, WSTransport

RAW: int
JSON: int
JSON_RELIABLE: int
PROTOBUF: int
PROTOBUF_RELIABLE: int
RELIABLE_VARIANTS: tuple[int, int]

def trim_transport(t: WSTransport) -> None: ...
def frame(opcode: int, payload: bytes) -> bytes: ...

class Connection(WSListener):
    connection_id: str
    user_id: str | None
    hub: str
    subprotocol: str | None
    groups: set[str] | frozenset[str]
    roles: set[str] | frozenset[str]
    variant: int
    sequence_id: int
    transport: WSTransport | None
    replay: Any
    acked_sequence_id: int
    replay_bytes: int
    replay_overflowed: bool
    replay_max_messages: int
    replay_max_bytes: int
    resend_next: int
    keep_session: bool
    last_seen: float
    close_reason: str | None
    def __init__(self, connection_id: str, user_id: str | None, hub: str, subprotocol: str | None, variant: int) -> None: ...
    @property
    def protocol(self) -> str | None: ...
    @property
    def is_open(self) -> bool: ...
    def acknowledge(self, sequence_id: int) -> None: ...
    def resend_unacknowledged(self, max_queued: int) -> bool: ...
    def on_replay_overflow(self) -> None: ...
    def send_frame(self, opcode: int, payload: bytes) -> bool: ...
    def flush(self) -> None: ...
    def discard_pending(self) -> None: ...

class Frames:
    payload: Any
    source: Any
    cost: int
    def __init__(self, payload: Any, source: Any) -> None: ...

def fanout(targets: Iterable[Connection], frames: Frames, excluded: frozenset[str] | None = None,
           predicate: Callable[[Connection], bool] | None = None) -> int: ...

class Tables:
    connections: dict[str, Connection]
    groups: dict[str, set[Connection]]
    users: dict[str, set[Connection]]
    def add(self, conn: Connection) -> None: ...
    def remove(self, conn: Connection) -> bool: ...
    def join(self, conn: Connection, group: str) -> bool: ...
    def leave(self, conn: Connection, group: str) -> bool: ...
    def group_members(self, group: str) -> Iterable[Connection]: ...
    def user_connections(self, user_id: str) -> Iterable[Connection]: ...
