"""Azure's other kinds of client, MQTT and Web PubSub for Socket.IO, are not served, and fastpush
says so rather than hand out a URL it does not serve.

The Python server SDK (azure-messaging-webpubsubservice 1.3.0) asks `:generateToken` with
`clientType` only when it holds a TokenCredential: then the SDK raises the 400 with fastpush's
reason. With an access key (a connection string) it makes the token and URL itself, with the
`/clients/mqtt/` or `/clients/socketio/` path; a client connecting there is refused with the reason.
"""
from __future__ import annotations

import time

import jwt
import pytest
import websockets
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient

HUB = "clienttypes"
NAMED = {"mqtt": "MQTT clients are not supported", "socketio": "Socket.IO clients are not supported"}


class RestTokenCredential:
    """A TokenCredential for the one REST call the test is about to make: its token's audience is
    that call's URL, signed with the access key (what fastpush's REST API checks)."""

    def __init__(self, key: str, audience: str):
        self.key, self.audience = key, audience

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        expires = int(time.time()) + 300
        return AccessToken(jwt.encode({"aud": self.audience, "exp": expires}, self.key.encode(), algorithm="HS256"),
                           expires)


def _token_call(tls_server, client_type: str) -> dict:
    """`get_client_access_token(client_protocol=...)` through REST (`:generateToken`)."""
    service = WebPubSubServiceClient(tls_server.endpoint, HUB, RestTokenCredential(tls_server.access_key, ""),
                                     connection_verify=str(tls_server.ca_file))
    query = f"minutesToExpire=60&api-version={service._config.api_version}&clientType={client_type}"
    service._config.credential.audience = f"{tls_server.endpoint}/api/hubs/{HUB}/:generateToken?{query}"
    return service.get_client_access_token(client_protocol=client_type)


@pytest.mark.parametrize("client_type", ["MQTT", "mqtt", "SocketIO"])
def test_generate_token_answers_400_for_clients_fastpush_does_not_serve(tls_server, client_type):
    with pytest.raises(HttpResponseError) as refused:
        _token_call(tls_server, client_type)
    assert refused.value.status_code == 400
    assert refused.value.error.code == "BadRequest"
    assert NAMED[client_type.lower()] in refused.value.message and "/client/hubs/{hub}" in refused.value.message


def test_generate_token_for_web_pubsub_clients(tls_server):
    token = _token_call(tls_server, "Default")
    assert token["url"].startswith(f"wss://127.0.0.1:{tls_server.port}/client/hubs/{HUB}?access_token=")


@pytest.mark.parametrize("client_type", ["MQTT", "SocketIO"])
async def test_a_url_the_sdk_made_itself_is_refused_with_the_reason(server, client_type):
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=HUB)
    url = service.get_client_access_token(client_protocol=client_type)["url"]
    assert f"/clients/{client_type.lower()}/hubs/{HUB}?access_token=" in url
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, subprotocols=["mqtt"] if client_type == "MQTT" else None)
    assert refused.value.response.status_code == 404
    assert NAMED[client_type.lower()].encode() in refused.value.response.body
