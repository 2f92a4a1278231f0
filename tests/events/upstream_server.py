"""An application server for event tests, written with the standard library: it checks the
abuse-protection handshake and the signature, records every event, and answers as told."""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_SECONDS = 10.0  # the longest a held request waits for fastpush to abandon it


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hold: bool = False  # never answer: wait for fastpush to close the socket (recorded in `abandoned`)


class Upstream:
    """Answers per event name via `answers[name]` (default 204); validates OPTIONS unless `refuse_validation`."""

    def __init__(self, access_keys: list[str]):
        self.access_keys = access_keys
        self.requests: list[Recorded] = []
        self.answers: dict[str, Answer] = {}
        self.refuse_validation = False
        self.bad_signatures: list[str] = []
        self.abandoned: list[Recorded] = []  # held requests whose socket fastpush closed
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length))
                upstream.requests.append(rec)
                return rec

            def do_OPTIONS(self):
                self._record()
                self.send_response(400 if upstream.refuse_validation else 200)
                if not upstream.refuse_validation:
                    self.send_header("WebHook-Allowed-Origin", "*")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                rec = self._record()
                upstream.check_signature(rec)
                answer = upstream.answers.get(rec.headers.get("ce-eventname", ""), Answer(204))
                if answer.hold:
                    self._hold(rec)
                    return
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                if answer.content_type:
                    self.send_header("Content-Type", answer.content_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def _hold(self, rec: Recorded) -> None:
                self.close_connection = True
                self.connection.settimeout(HOLD_SECONDS)
                try:
                    closed = self.connection.recv(1) == b""
                except OSError:
                    closed = False
                if closed:
                    upstream.abandoned.append(rec)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def check_signature(self, rec: Recorded) -> None:
        """ce-signature must hold sha256=HMAC(key, connectionId) for each access key."""
        cid = rec.headers.get("ce-connectionid", "")
        expected = {"sha256=" + hmac.new(k.encode(), cid.encode(), hashlib.sha256).hexdigest()
                    for k in self.access_keys}
        got = set(rec.headers.get("ce-signature", "").split(","))
        if got != expected:
            self.bad_signatures.append(cid)

    def events(self, name: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.headers.get("ce-eventname") == name]

    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/upstream/{{hub}}/{{event}}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
