"""A REST token is good for exactly the URL it was signed for (fastpush/auth/tokens.py states the
rule): tokens for a look-alike URL are answered 401 with a reason, while the official SDKs' real
tokens — odd user and group names, filters, exclusions, and behind a reverse proxy with
`public_host` — keep working."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import time
from asyncio.subprocess import PIPE

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from fastpush import Server
from tests import helpers
from tests.compat.sdk_versions import npm_packages
from tests.compat.test_js_server_sdk import JS_DIR, Sdk, text
from tests.helpers import JSON_V1, connect
from tests.security.conftest import assert_still_serving

pytestmark = pytest.mark.timeout(90)

API = "api-version=2024-12-01"
ODD_USERS = ["a/b", "x y", "o'neil!*()~", "u?&=#%2F", "élan"]


def rest_token(key: str, aud: str) -> str:
    return jwt.encode({"aud": aud, "exp": int(time.time()) + 60}, key.encode(), algorithm="HS256")


def call(server, method: str, target: str, token: str) -> tuple[int, dict | None]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, target, body=b"x" if method == "POST" else None,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


# --- look-alike URLs are refused ---------------------------------------------------------------------

def _look_alikes(endpoint: str, hub: str) -> dict[str, tuple[str, str, str, str]]:
    """case -> (aud the token was signed for, method, target it is used on, word in the reason)."""
    base = f"/api/hubs/{hub}"
    return {
        "group-name-case": (f"{endpoint}{base}/groups/admins/:send?{API}", "POST",
                            f"{base}/groups/ADMINS/:send?{API}", "path"),
        "encoded-slash-as-path": (f"{endpoint}{base}/users/x%2Fgroups%2Fy?{API}", "PUT",
                                  f"{base}/users/x/groups/y?{API}", "path"),
        # a token to send to the user "x/api/hubs/{hub}" once ended with the send-to-all path
        "suffix-of-send-to-user": (f"{endpoint}{base}/users/x%2Fapi%2Fhubs%2F{hub}/:send?{API}", "POST",
                                   f"{base}/:send?{API}", "path"),
        "path-prefix": (f"{endpoint}/gateway{base}/:send?{API}", "POST", f"{base}/:send?{API}", "path"),
        "no-query-for-filter": (f"{endpoint}{base}/:send", "POST",
                                f"{base}/:send?{API}&filter=userId%20ne%20'nobody'", "query"),
        "no-query-for-excluded": (f"{endpoint}{base}/:send", "POST", f"{base}/:send?excluded=c1&{API}", "query"),
        "no-query-for-generate-token": (f"{endpoint}{base}/:generateToken", "POST",
                                        f"{base}/:generateToken?userId=admin&role=webpubsub.sendToGroup&{API}",
                                        "query"),
        "other-excluded": (f"{endpoint}{base}/:send?excluded=c1&{API}", "POST", f"{base}/:send?excluded=c2&{API}",
                           "query"),
        "another-host": (f"http://evil.example:{endpoint.rsplit(':', 1)[1]}{base}/:send?{API}", "POST",
                         f"{base}/:send?{API}", "host"),
        "another-port": (f"{endpoint.rsplit(':', 1)[0]}:1{base}/:send?{API}", "POST", f"{base}/:send?{API}", "port"),
        "https-for-http": ("https" + endpoint[4:] + f"{base}/:send?{API}", "POST", f"{base}/:send?{API}", "scheme"),
    }


@pytest.mark.parametrize("case", list(_look_alikes("http://h:1", "h")))
async def test_token_for_a_look_alike_url_is_401(server, hub_name, case):
    listener = await connect(server, hub_name, JSON_V1, user_id="x/groups/y", groups=["ADMINS"])
    aud, method, target, reason = _look_alikes(server.endpoint, hub_name)[case]
    status, body = await asyncio.to_thread(call, server, method, target, rest_token(server.access_key, aud))
    assert status == 401, body
    assert body["code"] == "Unauthorized" and reason in body["message"], body
    await listener.expect_silence(0.2)
    await listener.close()
    await assert_still_serving(server)


async def test_the_exact_url_is_accepted(server, hub_name):
    """The counterpart of the refusals: the same calls signed for their own URL go through."""
    listener = await connect(server, hub_name, JSON_V1)
    for target in (f"/api/hubs/{hub_name}/:send?{API}&filter=userId%20eq%20null",
                   f"/api/hubs/{hub_name}/:send?excluded=c1&{API}"):
        token = rest_token(server.access_key, server.endpoint + target)
        assert (await asyncio.to_thread(call, server, "POST", target, token))[0] == 202
        assert (await listener.recv())["data"] == "x"
    await listener.close()


# --- the Python server SDK -------------------------------------------------------------------------

def run(fn, *args, **kwargs):
    return asyncio.to_thread(fn, *args, **kwargs)


async def exercise_python_sdk(server, hub: str, sdk: WebPubSubServiceClient) -> None:
    """Sends with filter and exclusions, to odd user ids, and group operations with odd names,
    each checked by what real clients receive."""
    users = {user: await connect(server, hub, JSON_V1, user_id=user) for user in ODD_USERS}
    for user, client in users.items():
        await run(sdk.send_to_user, user, f"to {user}", content_type="text/plain")
        assert (await client.recv())["data"] == f"to {user}"

    skipped = users["a/b"]
    await run(sdk.send_to_all, "all but a/b", content_type="text/plain", excluded=[skipped.connection_id],
              filter="userId ne 'x y' and userId ne 'o''neil!*()~'")
    for user in ("u?&=#%2F", "élan"):
        assert (await users[user].recv())["data"] == "all but a/b"

    group = "g/ 1?#"
    await run(sdk.add_user_to_group, group, "a/b")
    await run(sdk.add_connection_to_group, group, users["x y"].connection_id)
    assert await run(sdk.group_exists, group) and await run(sdk.user_exists, "x y")
    await run(sdk.send_to_group, group, "to the group", content_type="text/plain")
    assert (await skipped.recv())["data"] == "to the group"
    assert (await users["x y"].recv())["data"] == "to the group"
    await run(sdk.remove_user_from_group, group, "a/b")
    await run(sdk.remove_connection_from_group, group, users["x y"].connection_id)
    assert not await run(sdk.group_exists, group)
    await asyncio.gather(*(client.expect_silence(0.1) for client in users.values()))
    await asyncio.gather(*(client.close() for client in users.values()))


async def test_python_sdk_odd_names_filters_and_groups(server, hub_name):
    await exercise_python_sdk(server, hub_name,
                              WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub_name))


# --- the JS server SDK ---------------------------------------------------------------------------

async def test_js_sdk_odd_names_filters_and_groups(tls_server, hub_name):
    """@azure/web-pubsub encodes with encodeURIComponent (which leaves !*'() as they are)."""
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(tls_server.ca_file)}
    process = await asyncio.create_subprocess_exec("node", str(JS_DIR / "sdk_methods.mjs"),
                                                   tls_server.connection_string, hub_name,
                                                   env=env, stdin=PIPE, stdout=PIPE, stderr=PIPE)
    version, _ = next(iter(npm_packages("@azure/web-pubsub").items()))  # the plain entry, which the driver loads
    sdk = Sdk(process, version)
    context = ssl.create_default_context(cafile=tls_server.ca_file)
    users = {user: await helpers.connect(tls_server, hub_name, JSON_V1, ssl=context, user_id=user)
             for user in ODD_USERS}
    try:
        for user, client in users.items():
            await sdk.call("sendToUser", user, *text(f"to {user}"))
            assert (await client.recv())["data"] == f"to {user}"
        await sdk.call("sendToAll", *text("not a/b", excludedConnections=[users["a/b"].connection_id],
                                         filter="userId eq 'x y'"))
        assert (await users["x y"].recv())["data"] == "not a/b"
        await sdk.call("addUser", "o'neil!*()~", group="g/ 1?#")
        await sdk.call("sendToAll", *text("to the group"), group="g/ 1?#")
        assert (await users["o'neil!*()~"].recv())["data"] == "to the group"
        assert await sdk.call("userExists", "u?&=#%2F") is True
        await asyncio.gather(*(client.expect_silence(0.1) for client in users.values()))
    finally:
        await asyncio.gather(*(client.close() for client in users.values()))
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 15)


# --- behind a reverse proxy -------------------------------------------------------------------------

class HostRewritingProxy:
    """A reverse proxy like nginx's default (`proxy_set_header Host $proxy_host`): each request goes
    on to the server with Host set to the server's own address, so the Host the server sees is not
    the one the SDK signed; WebSocket upgrades are piped through."""

    def __init__(self):
        self.upstream_port = 0
        self.port = 0
        self._listener: asyncio.AbstractServer | None = None
        self._sessions: set[asyncio.Task] = set()

    async def start(self) -> HostRewritingProxy:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and end the connections the SDK keeps alive."""
        self._listener.close()
        for session in self._sessions:
            session.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._sessions.add(asyncio.current_task())
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.create_task(_pipe(up_reader, writer))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                up_writer.write(self._rewritten(head))
                if b"\r\nupgrade:" in head.lower():
                    await _pipe(reader, up_writer)
                    break
                assert b"transfer-encoding" not in head.lower(), "the test proxy forwards Content-Length bodies only"
                length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                up_writer.write(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            back.cancel()
            writer.close()

    def _rewritten(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        host = f"Host: 127.0.0.1:{self.upstream_port}".encode()
        return b"\r\n".join(host if line.lower().startswith(b"host:") else line for line in lines)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy():
    running = await HostRewritingProxy().start()
    yield running
    await running.stop()


async def test_python_sdk_behind_a_proxy_with_public_host(make_server, proxy, hub_name):
    server = make_server(public_host=f"127.0.0.1:{proxy.port}")
    proxy.upstream_port = server.port
    assert server.endpoint == f"http://127.0.0.1:{proxy.port}"  # what the SDK and clients are given
    await exercise_python_sdk(server, hub_name,
                              WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub_name))
    await assert_still_serving(server)


async def test_behind_a_proxy_without_public_host_the_sdk_is_refused(make_server, proxy, hub_name):
    """The control: the same proxy, but the server does not know the address the SDK signs for."""
    server = make_server()
    proxy.upstream_port = server.port
    sdk = WebPubSubServiceClient.from_connection_string(
        f"Endpoint=http://127.0.0.1:{proxy.port};AccessKey={server.access_key};Version=1.0;", hub=hub_name)
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as refused:
        await run(sdk.send_to_all, "never", content_type="text/plain")
    assert refused.value.status_code == 401
    await assert_still_serving(server)


@pytest.mark.parametrize("public_host, endpoint", [
    (None, "http://127.0.0.1:8080"),
    ("example.com", "http://example.com:8080"),
    ("example.com:8443", "http://example.com:8443"),
    ("https://example.com", "https://example.com:443"),
    ("https://Example.com:9443/", "https://Example.com:9443"),
    ("::1", "http://[::1]:8080"),
    ("[::1]:9000", "http://[::1]:9000"),
])
def test_endpoint_composes_public_host_and_port(public_host, endpoint):
    assert Server("127.0.0.1", 8080, public_host=public_host).endpoint == endpoint
