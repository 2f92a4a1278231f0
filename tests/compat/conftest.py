"""Fixtures of the SDK compatibility tests."""
from collections.abc import Iterator
from typing import Any

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.compat.drivers import ClientDriver, client_drivers
from tests.conftest import SplitDeployment
from tests.helpers import client_url


@pytest.fixture
def service(server, hub_name) -> WebPubSubServiceClient:
    """The Python server SDK on the test's hub, for pushes through REST."""
    return WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub_name)


@pytest.fixture(params=["single-node", "cluster"])
def deployment(request) -> SplitDeployment:
    """A test runs against one node, and against three nodes sharing Redis with the SDK's REST
    calls going to a different node than the one the clients are connected to."""
    if request.param == "single-node":
        single = request.getfixturevalue("server")
        return SplitDeployment(single, single)
    nodes = request.getfixturevalue("cluster")
    return SplitDeployment(nodes[0], nodes[1])


CLIENT_DRIVERS = client_drivers()


@pytest.fixture(scope="session")
def _client_drivers_closed() -> Iterator[None]:
    """The drivers live for the session (the JS driver's node process serves every test of its
    version) and end with it."""
    yield
    for driver in CLIENT_DRIVERS:
        driver.close()


@pytest.fixture(params=CLIENT_DRIVERS, ids=str)
def driver(request, _client_drivers_closed) -> ClientDriver:
    """Each installed client SDK version (tests/compat/drivers/). Function-scoped over
    session-lived drivers, so pytest keeps the tests in file order rather than regrouping
    them (and their modules) by driver."""
    return request.param


def js_driver_fixture(drivers: list[ClientDriver]) -> Any:
    """A module's `js_driver` fixture over the JS client versions it needs (see JS_DRIVERS)."""
    @pytest.fixture(params=drivers, ids=str)
    def js_driver(request, _client_drivers_closed) -> ClientDriver:
        return request.param
    return js_driver


JS_DRIVERS = [d for d in CLIENT_DRIVERS if d.sdk == "js"]
JS_1_1_DRIVERS = [d for d in JS_DRIVERS if tuple(int(p) for p in d.version.split(".")[:2]) >= (1, 1)]


@pytest.fixture(params=["reliable", "json"])
def protocol(request) -> str:
    """The JS client tests' subprotocol: json.reliable.webpubsub.azure.v1 or json.webpubsub.azure.v1."""
    return request.param


@pytest.fixture
async def started(js_driver, server, hub_name, protocol):
    """Make and start a JS client of `claims` on the module's `js_driver`; each is let go at the
    end of the test."""
    made = []

    async def start(**claims):
        client = await js_driver.client(client_url(server, hub_name, **claims), protocol)
        made.append(client)
        await client.start()
        return client

    yield start
    for client in made:
        await client.dispose()
