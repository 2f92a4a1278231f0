"""The Python client SDK (azure-messaging-webpubsubclient, its sync WebPubSubClient), unmodified,
in the test process: its blocking calls run in worker threads, its callbacks (each on a thread of
its own) hand their events to the test's loop.

The SDK loses the wakeup of an ack that arrives before its sending thread waits for it, and
then sits out the whole `ack_timeout` before returning success; open() has the same race with
the handshake and then sits out `start_timeout`. The driver shortens both so a miss costs
seconds, not 30 s; `test_many_acked_calls_all_succeed` shows how often acks are missed.

Versions: the SDK runs in this process, so the driver drives the one version pip installed
(pinned in pyproject.toml's `test` extra). Driving a second version next to it would take an
install of its own (`pip install --target ...`) and a driver that runs it in a subprocess.
"""
from __future__ import annotations

import asyncio
from importlib.metadata import version as installed_version
from typing import Any

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    SendMessageError,
    WebPubSubDataType,
    WebPubSubProtocolType,
)

from tests.compat.drivers import ClientDriver, Event, Message, SdkCallError, SdkClient, Sent

DISTRIBUTION = "azure-messaging-webpubsubclient"
ACK_TIMEOUT = 2.0  # far above a real ack's latency (< 10 ms here); what a lost ack wakeup costs
START_TIMEOUT = 5.0  # far above a real open (< 10 ms here); what a lost open wakeup costs


def python_client_versions() -> list[str]:
    """The version installed, the only one this driver can drive."""
    return [installed_version(DISTRIBUTION)]


def _payload(data: Any, data_type: str) -> Any:
    return memoryview(data) if data_type == "binary" else data


class PythonClient(SdkClient):
    reports_results = False  # join_group, send_to_group, ... return None, and raise when refused

    def __init__(self, driver: ClientDriver, sdk: Any, loop: asyncio.AbstractEventLoop):
        super().__init__(driver, loop)
        self.sdk = sdk
        for kind in CallbackType:
            sdk.subscribe(kind, lambda *args, kind=kind: self._deliver(kind.value, args[0] if args else None))

    def _deliver(self, kind: str, args: Any) -> None:
        """On an SDK thread: the event, in the common shape, to the test's loop."""
        event = Event(kind, details=args)
        if kind == "connected":
            event = Event(kind, connection_id=args.connection_id, user_id=args.user_id, details=args)
        elif kind == "disconnected":
            event = Event(kind, connection_id=args.connection_id, details=args)
        elif kind in ("server-message", "group-message"):
            data_type = WebPubSubDataType(args.data_type).value
            data = bytes(args.data) if data_type == "binary" else args.data
            source, from_user = ("server", None) if kind == "server-message" else (args.group, args.from_user_id)
            event = Event(kind, message=Message(source, from_user, data_type, data, args.sequence_id), details=args)
        self.deliver_threadsafe(event)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """SDK calls block until their ack: run them off the test's event loop."""
        try:
            return await asyncio.to_thread(getattr(self.sdk, method), *args, **kwargs)
        except SendMessageError as error:
            detail = error.error_detail.name if error.error_detail is not None else None
            raise SdkCallError(method, error.name, detail, error.ack_id, error) from error

    async def _start(self) -> None:
        await self._call("open")

    async def stop(self) -> None:
        await self._call("close")

    async def join_group(self, group: str, *, ack_id: int | None = None) -> Sent | None:
        return await self._call("join_group", group, **({"ack_id": ack_id} if ack_id is not None else {}))

    async def leave_group(self, group: str, *, ack_id: int | None = None) -> Sent | None:
        return await self._call("leave_group", group, **({"ack_id": ack_id} if ack_id is not None else {}))

    async def send_to_group(self, group: str, data: Any, data_type: str, *, no_echo: bool = False,
                            ack: bool = True, ack_id: int | None = None) -> Sent | None:
        return await self._call("send_to_group", group, _payload(data, data_type), WebPubSubDataType(data_type),
                                no_echo=no_echo, ack=ack, ack_id=ack_id)

    async def send_event(self, event: str, data: Any, data_type: str, *, ack: bool = True,
                         ack_id: int | None = None) -> Sent | None:
        return await self._call("send_event", event, _payload(data, data_type), WebPubSubDataType(data_type),
                                ack=ack, ack_id=ack_id)

    async def dispose(self) -> None:
        await self.stop()  # close() returns at once when the client is stopped or stopping


class PythonClientDriver(ClientDriver):
    sdk = "python"
    ack_timeout = ACK_TIMEOUT
    events_in_order = False  # the SDK runs each callback on a thread of its own

    async def client(self, url: str, protocol: str, *, credential: bool = False,
                     message_retries: int | None = None) -> SdkClient:
        installed = installed_version(DISTRIBUTION)
        if installed != self.version:
            pytest.fail(f"{DISTRIBUTION} {self.version} is needed, {installed} is installed; "
                        f'run `pip install -e ".[test]"`', pytrace=False)
        protocol_type = {"reliable": WebPubSubProtocolType.JSON_RELIABLE, "json": WebPubSubProtocolType.JSON}[protocol]
        options: dict[str, Any] = {}
        if message_retries is not None:
            options["message_retry_total"] = message_retries
        sdk = WebPubSubClient(WebPubSubClientCredential(client_access_url_provider=lambda: url) if credential else url,
                              protocol_type=protocol_type, ack_timeout=ACK_TIMEOUT, start_timeout=START_TIMEOUT,
                              **options)
        return PythonClient(self, sdk, asyncio.get_running_loop())

    def close(self) -> None:
        """Nothing to end: each client's threads end with its close()."""
