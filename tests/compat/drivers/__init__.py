"""One interface over the official Web PubSub client SDKs, so each scenario is written once
(tests/compat/test_client_sdk_scenarios.py) and run through every SDK and version installed.

A `ClientDriver` drives one installed version of one SDK and makes `SdkClient`s on it. An
`SdkClient` wraps one unmodified client object of that SDK: its calls are awaited here, and its
events (from SDK threads or a node process) queue up as `Event`s with a `Message` in one shape
for every SDK. Data is Python-side in every driver: str for text, a JSON value for json, bytes
for binary.

The drivers:
  drivers/python_client.py  azure-messaging-webpubsubclient (the sync WebPubSubClient), in process
  drivers/js_client.py      @azure/web-pubsub-client, in one `node js/client_host.mjs` per version
`client_drivers()` lists one driver per installed SDK version; the tests parametrize over it.
"""
from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

EVENT_TIMEOUT = 10.0  # for an event the test is waiting for; far above any real latency here


@dataclass(frozen=True)
class Message:
    """A server or group message as an SDK delivered it: `source` is the group, or "server"."""

    source: str
    from_user_id: str | None
    data_type: str  # "text" | "json" | "binary"
    data: Any  # str | JSON value | bytes
    sequence_id: int | None = field(default=None, compare=False)  # reliable protocols only


@dataclass(frozen=True)
class Event:
    """An SDK event: connected, disconnected, stopped, server-message, group-message, rejoin-group-failed."""

    kind: str
    connection_id: str | None = None  # connected, disconnected
    user_id: str | None = None  # connected
    message: Message | None = None  # server-message, group-message
    details: Any = field(default=None, compare=False)  # the SDK's own event arguments


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and not isinstance(other, bool)

    def __repr__(self) -> str:
        return "<any int>"


ANY_INT: Any = _AnyInt()


@dataclass(frozen=True)
class Sent:
    """What an SDK call reports about its message: the ackId it used (None for fire-and-forget)
    and whether the service answered Duplicate."""

    ack_id: int | None
    duplicated: bool


ACKED = Sent(ANY_INT, duplicated=False)
UNACKED = Sent(None, duplicated=False)


class SdkCallError(Exception):
    """A failed SDK call in one shape: `name` is the SDK error's name (SendMessageError),
    `detail` the name of the service's ack error (Forbidden, ...); `error` is the SDK's own."""

    def __init__(self, method: str, name: str, detail: str | None, ack_id: int | None, error: Any):
        super().__init__(f"{method}: {name} ({detail}), ackId {ack_id}: {error}")
        self.name, self.detail, self.ack_id, self.error = name, detail, ack_id, error


class SdkClient(ABC):
    """One client of the driver's SDK. Calls return when the SDK's call returns (for acked
    sends: at the ack); `event()` and `message()` wait for the next event with a deadline."""

    #: whether the SDK's send/join/leave calls return a result (`Sent`); if not they return None
    #: and report failure by raising only (see `returns`)
    reports_results: bool = True

    def __init__(self, driver: ClientDriver, loop: asyncio.AbstractEventLoop):
        self.driver = driver
        self.connection_id: str | None = None
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop  # the loop of the test that made the client

    def deliver_threadsafe(self, event: Event) -> None:
        """From an SDK or reader thread: queue `event` on the test's loop."""
        with contextlib.suppress(RuntimeError):  # the test's loop is gone: nobody waits for events any more
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def returns(self, sent: Sent) -> Sent | None:
        """What this SDK's call returns when the service handled the message as `sent` says."""
        return sent if self.reports_results else None

    async def event(self, timeout: float = EVENT_TIMEOUT) -> Event:
        """The next event, waiting at most `timeout` seconds for it."""
        return await asyncio.wait_for(self.events.get(), timeout)

    async def message(self, timeout: float = EVENT_TIMEOUT) -> Message:
        """The next event, which must be a server or group message."""
        event = await self.event(timeout)
        assert event.kind in ("server-message", "group-message") and event.message is not None, event
        return event.message

    async def start(self) -> tuple[str, str | None]:
        """Start the client and wait for `connected`: (connection id, user id)."""
        await self._start()
        connected = await self.event()
        assert connected.kind == "connected", connected
        self.connection_id = connected.connection_id
        assert self.connection_id
        return self.connection_id, connected.user_id

    @abstractmethod
    async def _start(self) -> None:
        """The SDK's start/open: it returns at the upgrade, before `connected` is delivered."""

    @abstractmethod
    async def stop(self) -> None:
        """The SDK's stop/close."""

    @abstractmethod
    async def join_group(self, group: str, *, ack_id: int | None = None) -> Sent | None: ...

    @abstractmethod
    async def leave_group(self, group: str, *, ack_id: int | None = None) -> Sent | None: ...

    @abstractmethod
    async def send_to_group(self, group: str, data: Any, data_type: str, *, no_echo: bool = False,
                            ack: bool = True, ack_id: int | None = None) -> Sent | None: ...

    @abstractmethod
    async def send_event(self, event: str, data: Any, data_type: str, *, ack: bool = True,
                         ack_id: int | None = None) -> Sent | None: ...

    @abstractmethod
    async def dispose(self) -> None:
        """Stop the client if it runs and let it go (end of test); safe to call twice."""


class ClientDriver(ABC):
    """One installed version of one client SDK. `str(driver)` ("python-1.1.0") is its test id."""

    sdk: str  # "python" | "js"
    #: the SDK's ack timeout when it has one that a test may run into (see python_client.py)
    ack_timeout: float | None = None
    #: whether the SDK delivers its events in the order the messages arrived on the wire
    events_in_order: bool = True

    def __init__(self, version: str):
        self.version = version

    def __str__(self) -> str:
        return f"{self.sdk}-{self.version}"

    __repr__ = __str__

    @abstractmethod
    async def client(self, url: str, protocol: str, *, credential: bool = False,
                     message_retries: int | None = None) -> SdkClient:
        """A new client, not started, for the client access URL `url`.

        protocol: "reliable" (json.reliable.webpubsub.azure.v1, the SDKs' default) or "json"
        (json.webpubsub.azure.v1); credential: hand the SDK a callback that returns `url`
        rather than `url` itself; message_retries: the SDK's retries of a failed send (its
        default when None)."""

    @abstractmethod
    def close(self) -> None:
        """End what the driver runs for all its clients (session end)."""


def client_drivers() -> list[ClientDriver]:
    """One driver per installed client SDK version, each a test parameter."""
    from tests.compat.drivers.js_client import JsClientDriver, js_client_versions
    from tests.compat.drivers.python_client import PythonClientDriver, python_client_versions

    return ([PythonClientDriver(version) for version in python_client_versions()]
            + [JsClientDriver(version) for version in js_client_versions()])
