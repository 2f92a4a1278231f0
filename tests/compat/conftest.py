"""Fixtures of the SDK compatibility tests."""
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient


@pytest.fixture
def service(server, hub_name) -> WebPubSubServiceClient:
    """The Python server SDK on the test's hub, for pushes through REST."""
    return WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub_name)
