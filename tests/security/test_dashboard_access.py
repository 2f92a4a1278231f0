"""The dashboard is never open to a caller without a session: each way in is refused, and guessing
is rate-limited. Every test runs against a real server (its own thread and loop) over sockets."""
from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fastpush.dashboard.access import FAILURES_PER_ADDRESS, MAX_LOGIN_TOKENS, MAX_SESSIONS
from fastpush.dashboard.routes import MAX_WATCHERS
from fastpush.devcert import server_ssl_context
from tests.conftest import ACCESS_KEY
from tests.dashboard_client import Dashboard
from tests.security.conftest import assert_still_serving

pytestmark = pytest.mark.timeout(60)

PROTECTED = [("GET", "/dashboard/"), ("GET", "/dashboard/static/app.js"), ("GET", "/dashboard/api/overview"),
             ("GET", "/dashboard/api/hubs"), ("GET", "/dashboard/api/hubs/chat/connections"),
             ("GET", "/dashboard/api/hubs/chat/groups"), ("POST", "/dashboard/api/hubs/chat/send"),
             ("POST", "/dashboard/api/hubs/chat/connections/c1/close"), ("POST", "/dashboard/api/token"),
             ("GET", "/dashboard/static/../../app.py")]


def login_url(server, lifetime: float | None = None) -> str:
    return server.call(server.server.dashboard.login_url, lifetime)


def logged_in(server) -> Dashboard:
    user = Dashboard(server.endpoint)
    assert user.login(login_url(server)).status == 200
    return user


def refused_upgrade(user: Dashboard, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        user.trace(**kwargs)
    return refused.value.response.status_code


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_without_a_session_every_dashboard_resource_is_401(make_server, method, path):
    server = make_server()
    answer = Dashboard(server.endpoint).request(method, path, {} if method == "POST" else None)
    assert answer.status == 401
    assert b"app.js" not in answer.body and b"import" not in answer.body  # nothing of the page leaks
    assert "set-cookie" not in answer.headers


def test_without_a_session_the_trace_socket_is_refused(make_server):
    server = make_server()
    assert refused_upgrade(Dashboard(server.endpoint)) == 401
    assert server.server.trace.watchers == 0


def test_a_forged_cookie_is_refused(make_server):
    server = make_server()
    real = logged_in(server)
    name = real.cookie.split("=")[0]
    forged = [f"{name}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", f"{name}=", f"{name}={real.cookie}",
              f"{name}={real.cookie.split('=', 1)[1][:-1]}",  # one character short
              f"fastpush_dashboard_1={real.cookie.split('=', 1)[1]}"]  # the right value under another server's name
    for cookie in forged:
        assert Dashboard(server.endpoint, cookie).get("api/hubs").status == 401, cookie
    assert refused_upgrade(Dashboard(server.endpoint, forged[0])) == 401
    assert real.get("api/hubs").status == 200


def test_an_expired_session_is_refused_and_its_trace_socket_closed(make_server):
    server = make_server()
    server.call(setattr, server.server.dashboard.sessions, "lifetime", 1.0)
    user = logged_in(server)
    assert user.get("api/hubs").status == 200
    ws = user.trace()
    with pytest.raises(ConnectionClosed) as closed:  # the dashboard's tick (every 2 s) closes it
        for _ in range(100):
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008
    assert user.get("api/hubs").status == 401


def test_a_login_token_works_once(make_server):
    server = make_server()
    url = login_url(server)
    first, second = Dashboard(server.endpoint), Dashboard(server.endpoint)
    answer = first.login(url)
    assert answer.status == 200
    reused = second.login(url)
    assert reused.status == 401 and "set-cookie" not in reused.headers
    assert first.get("api/hubs").status == 200


def test_a_login_token_expires(make_server):
    server = make_server()
    url = login_url(server, 0.3)
    time.sleep(0.6)
    assert Dashboard(server.endpoint).login(url).status == 401


def test_a_wrong_login_token_is_refused(make_server):
    server = make_server()
    user = Dashboard(server.endpoint)
    for query in ("", "?token=", "?token=x", "?token=" + "A" * 43, "?token=%00", "?token=" + "%C3%A9" * 5000):
        assert user.request("GET", "/dashboard/login" + query).status == 401, query
    assert user.request("POST", "/dashboard/login?token=x").status == 401


def test_login_tokens_and_sessions_are_bounded(make_server):
    server = make_server()
    urls = [login_url(server) for _ in range(MAX_LOGIN_TOKENS + 1)]
    assert Dashboard(server.endpoint).login(urls[0]).status == 401  # the oldest made room
    users = [Dashboard(server.endpoint) for _ in range(MAX_SESSIONS + 1)]
    for user in users:
        assert user.login(login_url(server)).status == 200
    assert users[0].get("api/hubs").status == 401  # the oldest session ended
    assert all(user.get("api/hubs").status == 200 for user in users[1:])
    dashboard = server.server.dashboard
    assert server.call(len, dashboard.sessions) == MAX_SESSIONS
    assert server.call(len, dashboard.login_tokens) <= MAX_LOGIN_TOKENS


def test_the_session_cookie_is_httponly_samesite_strict_and_scoped(make_server):
    server = make_server()
    answer = Dashboard(server.endpoint).login(login_url(server))
    name, _, attributes = answer.headers["set-cookie"].partition(";")
    parts = {part.strip().split("=")[0].lower(): part.strip() for part in attributes.split(";")}
    assert name.startswith(f"fastpush_dashboard_{server.port}=")
    assert parts["httponly"] == "HttpOnly" and parts["samesite"] == "SameSite=Strict"
    assert parts["path"] == "Path=/dashboard" and "secure" not in parts  # plain http here
    assert answer.headers["referrer-policy"] == "no-referrer"
    # The login page moves the browser to the dashboard, without the token in its address.
    assert b'url=/dashboard/"' in answer.body and b"token" not in answer.body


def test_over_tls_the_cookie_is_secure(make_server, dev_cert):
    server = make_server(ssl_context=server_ssl_context(dev_cert.cert_file, dev_cert.key_file))
    url = login_url(server)
    cookie = server.call(lambda: server.server.dashboard.secure)
    assert cookie is True and url.startswith("https://")
    # The header itself, over a real TLS socket.
    import http.client
    import ssl
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port,
                                       context=ssl.create_default_context(cafile=str(dev_cert.ca_file)), timeout=10)
    conn.request("GET", f"{parts.path}?{parts.query}")
    response = conn.getresponse()
    assert response.status == 200
    assert "; Secure" in response.getheader("Set-Cookie")
    conn.close()


def test_the_trace_socket_checks_its_origin(make_server):
    server = make_server()
    user = logged_in(server)
    assert refused_upgrade(user, origin="http://evil.example") == 403
    assert refused_upgrade(user, origin=None) == 403  # no Origin: not a page of ours
    assert refused_upgrade(user, origin=f"http://127.0.0.1:{server.port + 1}") == 403
    assert refused_upgrade(user, origin="null") == 403
    with user.trace() as ws:  # the dashboard's own origin
        assert ws.protocol.state.name == "OPEN"


def test_an_action_from_another_origin_is_refused_and_does_nothing(make_server):
    server = make_server()
    user = logged_in(server)
    hub = "h" + uuid.uuid4().hex[:8]
    for origin in ("http://evil.example", ""):
        answer = user.request("POST", f"/dashboard/api/hubs/{hub}/send", {"data": "hi"},
                              headers={"Origin": origin} if origin else {"Origin": "http://evil.example"})
        assert answer.status == 403
    no_origin = user.request("POST", "/dashboard/api/token", {"hub": hub}, headers={"Origin": ""})
    assert no_origin.status == 403

    async def nothing_arrives():
        from tests.helpers import connect
        client = await connect(server, hub, "json.webpubsub.azure.v1")
        try:
            await asyncio.to_thread(user.request, "POST", f"/dashboard/api/hubs/{hub}/send", {"data": "x"},
                                    headers={"Origin": "http://evil.example"})
            await client.expect_silence(0.5)
        finally:
            await client.close()
    asyncio.run(nothing_arrives())


def test_guessing_login_tokens_is_rate_limited(make_server):
    server = make_server()
    server.call(setattr, server.server.dashboard.limiter, "window", 3.0)
    valid = login_url(server)
    guesser = Dashboard(server.endpoint)
    statuses = [guesser.request("GET", f"/dashboard/login?token=guess{i}").status
                for i in range(FAILURES_PER_ADDRESS + 5)]
    assert statuses[:FAILURES_PER_ADDRESS] == [401] * FAILURES_PER_ADDRESS
    assert statuses[FAILURES_PER_ADDRESS:] == [429] * 5
    limited = Dashboard(server.endpoint).login(valid)
    assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
    assert "set-cookie" not in limited.headers  # not even a right token gets in meanwhile
    deadline = time.monotonic() + 10
    while Dashboard(server.endpoint).request("GET", "/dashboard/login?token=probe").status == 429:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert Dashboard(server.endpoint).login(valid).status == 200  # the token was not used up by the refusals


def test_guessing_session_cookies_is_rate_limited_but_live_sessions_go_on(make_server):
    server = make_server()
    user = logged_in(server)
    name = user.cookie.split("=")[0]
    statuses = [Dashboard(server.endpoint, f"{name}=guess{i}").get("api/hubs").status
                for i in range(FAILURES_PER_ADDRESS + 3)]
    assert statuses[-3:] == [429] * 3
    assert user.get("api/hubs").status == 200


def test_a_login_url_is_given_only_for_the_access_key(make_server):
    server = make_server()
    path = "/dashboard/login-url?api-version=2024-01-01"
    audience = server.endpoint + path
    anyone = Dashboard(server.endpoint)
    assert anyone.request("POST", path).status == 401
    wrong_key = b"not the access key of this server, at all"
    forged = jwt.encode({"aud": audience, "exp": int(time.time()) + 60}, wrong_key, algorithm="HS256")
    assert anyone.request("POST", path, headers={"Authorization": f"Bearer {forged}"}).status == 401
    assert anyone.request("POST", path, headers={"Authorization": f"Bearer {ACCESS_KEY}"}).status == 401
    signed = jwt.encode({"aud": audience, "exp": int(time.time()) + 60}, ACCESS_KEY.encode(), algorithm="HS256")
    answer = anyone.request("POST", path, headers={"Authorization": f"Bearer {signed}"})
    assert answer.status == 200
    assert Dashboard(server.endpoint).login(answer.json()["url"]).status == 200


def test_trace_watchers_are_capped(make_server):
    server = make_server()
    user = logged_in(server)
    open_sockets = [user.trace() for _ in range(MAX_WATCHERS)]
    try:
        assert refused_upgrade(user) == 503
    finally:
        for ws in open_sockets:
            ws.close()
    deadline = time.monotonic() + 5
    while server.call(len, server.server.dashboard.watchers):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    user.trace().close()  # room again


@pytest.mark.parametrize(("message", "code"), [(b'{"paused": "yes"}', 1007), (b'{"kinds": ["secrets"]}', 1007),
                                               (b"not json", 1007), (b'{"extra": 1}', 1007),
                                               (b'{"hub": "' + b"x" * 5000 + b'"}', 1009)])
def test_bad_trace_settings_close_the_socket(make_server, message, code):
    server = make_server()
    ws = logged_in(server).trace()
    ws.send(message.decode())
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd.code == code
    assert server.server.trace.watchers == 0 or _eventually(lambda: server.server.trace.watchers == 0)


def test_without_its_dashboard_a_server_answers_404(make_server):
    server = make_server(dashboard=False)
    user = Dashboard(server.endpoint)
    assert user.request("GET", "/dashboard/login?token=x").status == 404
    assert user.request("GET", "/dashboard/").status == 404
    assert refused_upgrade(user) == 404
    asyncio.run(assert_still_serving(server))


def _eventually(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_logged_out_session_is_refused(make_server):
    server = make_server()
    user = logged_in(server)
    answer = user.post("api/logout")
    assert answer.status == 204 and "Max-Age=0" in answer.headers["set-cookie"]
    assert user.get("api/hubs").status == 401
