"""A dashboard user for tests, without a browser: logs in with a login URL, keeps the session
cookie, calls the JSON API, opens the Live Trace socket. Synchronous: the servers under test run
on loops of their own (in a thread, or in a process)."""
from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from websockets.sync.client import ClientConnection, connect

TIMEOUT = 10.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names; Set-Cookie kept whole
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Dashboard:
    endpoint: str  # http://host:port
    cookie: str | None = None  # "name=value", once logged in
    origin: str | None = field(default=None)  # sent as Origin on POSTs (default: the endpoint)

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None,
                cookie: str | None = None) -> Answer:
        parts = urlsplit(self.endpoint)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        sent = dict(headers or {})
        cookie = cookie if cookie is not None else self.cookie
        if cookie:
            sent["Cookie"] = cookie
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if method == "POST":
            sent.setdefault("Origin", self.origin or self.endpoint)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def login(self, url: str) -> Answer:
        """Use a login URL; keeps the session cookie it sets."""
        parts = urlsplit(url)
        answer = self.request("GET", f"{parts.path}?{parts.query}")
        if answer.status == 200:
            self.cookie = answer.headers["set-cookie"].split(";")[0]
        return answer

    def get(self, path: str, **kwargs) -> Answer:
        return self.request("GET", "/dashboard/" + path, **kwargs)

    def post(self, path: str, body: object = None, **kwargs) -> Answer:
        return self.request("POST", "/dashboard/" + path, {} if body is None else body, **kwargs)

    def trace(self, *, origin: str | None = "", cookie: str | None = None, **settings) -> ClientConnection:
        """The Live Trace socket, with its settings sent ("" origin: the endpoint's; None: no Origin)."""
        headers = {}
        cookie = cookie if cookie is not None else self.cookie
        if cookie:
            headers["Cookie"] = cookie
        ws = connect("ws" + self.endpoint[4:] + "/dashboard/trace", additional_headers=headers,
                     origin=(self.endpoint if origin == "" else origin), open_timeout=TIMEOUT, proxy=None, legacy=True)
        ws.send(json.dumps(settings))
        return ws


def lines_until(ws: ClientConnection, predicate, timeout: float = TIMEOUT) -> list[dict]:
    """Trace lines received until one satisfies `predicate` (all of them, that one last)."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        for line in message["lines"]:
            seen.append(line)
            if predicate(line):
                return seen
    raise AssertionError(f"no such trace line within {timeout} s; saw {seen[-20:]}")
