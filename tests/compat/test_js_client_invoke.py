"""@azure/web-pubsub-client's `invokeEvent` (1.0.4 and 1.1.0, unmodified) through fastpush to
(a) an application server built with @azure/web-pubsub-express (tests/compat/js/express_upstream.mjs),
whose `handleUserEvent` answers invocations unchanged, since an invocation reaches it as the user
event of its name, and (b) the embedding API's in-process `on_event`:

- the handler's answer resolves invokeEvent with {invocationId, dataType, data};
- a refusal (express `res.fail(400, ...)`, `EventRejected(400, ...)`) rejects it with the SDK's
  InvocationError carrying the service's error (BadRequest and the handler's text);
- an upstream that does not answer within the upstream timeout: InvocationError `Timeout`;
- an aborted invokeEvent (abortSignal; the SDK then sends cancelInvocation) abandons the upstream
  HTTP request / cancels the in-process callback; the connection goes on.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.compat.conftest import JS_DRIVERS, js_driver_fixture
from tests.compat.drivers import SdkCallError
from tests.compat.drivers.js_client import _to_js
from tests.events.test_express_upstream import HUB, express_app, running_express_app  # noqa: F401 (a fixture)
from tests.helpers import ServerView, client_url, eventually

_abort_names = itertools.count(1)
js_driver = js_driver_fixture(JS_DRIVERS)  # every JS version pinned has invokeEvent


def _express_config(express_app, timeout: float) -> Config:  # noqa: F811 (the fixture's value)
    listening = express_app.listening
    handler = EventHandlerSettings(f"http://127.0.0.1:{listening['listening']}{listening['path']}{{event}}",
                                   user_event_pattern="*")
    return Config(hubs={HUB: HubSettings(event_handlers=[handler])}, upstream_timeout_seconds=timeout)


@dataclass
class Backend:
    """fastpush and what answers its invocations: the express app, or in-process callbacks (`express`
    None) whose hanging invocations are recorded as started and cancelled."""

    server: Any
    express: Any = None
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


@pytest.fixture(params=["express", "embedded"])
async def backend(request):
    if request.param == "express":
        async with running_express_app() as express, \
                fastpush.Server(port=0, config=_express_config(express, 20.0)) as srv:
            yield Backend(srv, express)
        return
    embedded = Backend(None)

    async def on_event(ctx, name, payload):
        data = payload.data.decode()
        if name == "invoke-echo":
            return {"echo": data, "user": ctx.user_id}
        if name == "invoke-refuse":
            raise fastpush.EventRejected(400, f"no such order: {data}")
        embedded.started.append(data)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            embedded.cancelled.append(data)
            raise

    async with fastpush.Server(port=0) as srv:
        srv.hub(HUB).handle_events(on_event=on_event, user_events="invoke-*")
        embedded.server = srv
        yield embedded


@pytest.fixture
def server(backend):
    """The conftest's `started` makes its clients on the backend's server and HUB."""
    return ServerView.of(backend.server)


@pytest.fixture
def hub_name() -> str:
    return HUB


async def test_invoke_event_resolves_with_the_handlers_answer(started, backend):
    client = await started(user_id="ann")
    result = await client._call("invokeEvent", "invoke-echo", "order 7", "text")
    assert result["invocationId"] and result["dataType"] == "json"
    if backend.express is not None:
        assert result["data"] == {"echo": "order 7", "dataType": "text", "user": "ann"}
        seen = await backend.express.read_until(lambda line: line.get("event") == "invoke")
        assert seen == {"event": "invoke", "name": "invoke-echo", "data": "order 7", "dataType": "text"}
    else:
        assert result["data"] == {"echo": "order 7", "user": "ann"}
    again = await client._call("invokeEvent", "invoke-echo", "again", "text", {"invocationId": "mine"})
    assert again["invocationId"] == "mine" and again["data"]["echo"] == "again"
    assert client.events.empty()


@pytest.mark.parametrize("backend", ["express"], indirect=True)  # in-process: tests/unit/test_invocations.py
async def test_json_and_binary_content_reach_the_handler(started, backend):
    client = await started()
    json_result = await client._call("invokeEvent", "invoke-echo", {"order": [1, 2]}, "json")
    assert json_result["data"]["echo"] == {"order": [1, 2]} and json_result["data"]["dataType"] == "json"
    binary = await client._call("invokeEvent", "invoke-echo", _to_js(b"\x00\x01\xff"), "binary")
    assert binary["data"] == {"echo": "AAH/", "dataType": "binary"}  # no user id: none in the answer


async def test_a_refusal_rejects_with_the_handlers_error(started):
    client = await started()
    with pytest.raises(SdkCallError) as failed:
        await client._call("invokeEvent", "invoke-refuse", "42", "text")
    assert failed.value.name == "InvocationError" and failed.value.detail == "BadRequest"
    assert failed.value.error["errorDetail"] == {"name": "BadRequest", "message": "no such order: 42"}
    assert (await client._call("invokeEvent", "invoke-echo", "after", "text"))["data"]["echo"] == "after"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)  # the express app takes every event
async def test_an_event_without_a_handler_rejects_not_found(started, backend):
    client = await started()
    with pytest.raises(SdkCallError) as failed:
        await client._call("invokeEvent", "unhandled", "?", "text")
    assert failed.value.detail == "NotFound"


async def test_aborting_invoke_event_cancels_the_handler_and_the_connection_goes_on(started, backend):
    client = await started()
    signal = f"abort-{next(_abort_names)}"
    call = asyncio.ensure_future(client._call("invokeEvent", "invoke-hang", "to cancel", "text",
                                              {"invocationId": signal, "abortSignal": {"$abortSignal": signal}}))
    if backend.express is not None:
        await backend.express.read_until(lambda line: line.get("event") == "invoke" and line["name"] == "invoke-hang")
    else:
        assert await eventually(lambda: backend.started == ["to cancel"])
    await client._call("abort", signal)
    with pytest.raises(SdkCallError) as failed:
        await call
    assert failed.value.name == "InvocationError" and failed.value.detail is None  # the SDK's own rejection
    if backend.express is not None:  # the SDK's cancelInvocation made fastpush abandon the HTTP request
        abandoned = await backend.express.read_until(lambda line: line.get("event") == "abandoned")
        assert abandoned == {"event": "abandoned", "invocationId": signal, "answered": False}
    else:
        assert await eventually(lambda: backend.cancelled == ["to cancel"])
    assert (await client._call("invokeEvent", "invoke-echo", "after", "text"))["data"]["echo"] == "after"
    assert client.events.empty()


async def test_an_upstream_that_does_not_answer_in_time_rejects_with_timeout(js_driver, express_app):  # noqa: F811
    async with fastpush.Server(port=0, config=_express_config(express_app, 1.0)) as server:
        client = await js_driver.client(client_url(ServerView.of(server), HUB), "reliable")
        try:
            await client.start()
            with pytest.raises(SdkCallError) as failed:
                await client._call("invokeEvent", "invoke-hang", "slow", "text")
            assert failed.value.name == "InvocationError" and failed.value.detail == "Timeout"
            abandoned = await express_app.read_until(lambda line: line.get("event") == "abandoned")
            assert abandoned["answered"] is False  # fastpush closed the request at its timeout
        finally:
            await client.dispose()
