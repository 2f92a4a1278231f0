"""Fixtures of the SDK compatibility tests."""
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.conftest import SplitDeployment


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
