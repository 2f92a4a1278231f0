"""Who may read /metrics, and where.

On the public port, `GET /metrics` needs `Authorization: Bearer <access key>`: the key itself (as
Prometheus' `authorization.credentials` sends it), compared with each access key in constant
time. A JWT, even one signed with the key, is refused: a token meant for one REST call must not
become a standing credential for the metrics. `--metrics-address` serves /metrics without
authentication on a listener of its own (plain HTTP, loopback unless told otherwise), which
answers nothing else.
"""
from __future__ import annotations

import time
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest

from ..auth.tokens import KeyRing
from ..http.front_door import ConnectionLimits, FrontDoor
from ..http.messages import Request, Response, error_response
from .counters import COUNTERS

__all__ = ["METRICS_PATH", "MAX_METRICS_CONNECTIONS", "MetricsEndpoint", "MetricsGate"]

METRICS_PATH: Final = "/metrics"
MAX_METRICS_CONNECTIONS: Final = 64  # open sockets on the separate listener, in all and per address
# The classic text format, which every Prometheus reads (generate_latest writes it: our names are
# plain ASCII); prometheus_client's CONTENT_TYPE_LATEST names the newer 1.0.0 in recent versions.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_CHALLENGE: Final = (("WWW-Authenticate", 'Bearer realm="fastpush metrics"'),)


class MetricsEndpoint:
    """Answers GET /metrics from `registry`, for callers `keyring` admits (or for anyone: the
    separate listener). Every answer is counted as the REST operation "metrics"."""

    def __init__(self, registry: CollectorRegistry, keyring: KeyRing) -> None:
        self.registry = registry
        self.keyring = keyring

    def answer(self, request: Request, *, authenticated: bool) -> Response:
        started = time.perf_counter()
        response = (None if authenticated else self._refusal(request)) or self._exposition(request)
        COUNTERS.rest_request("metrics", response.status, time.perf_counter() - started)
        return response

    def _refusal(self, request: Request) -> Response | None:
        """The 401 for a caller without an access key, saying why; None for one with it."""
        auth = request.headers.get("authorization")
        if not auth:
            return _unauthorized("Missing 'Authorization: Bearer <access key>' header.")
        scheme, _, credential = auth.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return _unauthorized("The Authorization header must be 'Bearer <access key>'.")
        if self.keyring.is_access_key(credential):
            return None
        if credential.count(".") == 2:
            return _unauthorized("/metrics takes an access key of the server as the bearer token, not a JWT.")
        return _unauthorized("The bearer token is not an access key of this server.")

    def _exposition(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "MethodNotAllowed", "Use GET on /metrics.", (("Allow", "GET, HEAD"),))
        return Response(200, generate_latest(self.registry), CONTENT_TYPE)


def _unauthorized(message: str) -> Response:
    return error_response(401, "Unauthorized", message, _CHALLENGE)


class MetricsGate:
    """The separate listener's gate (fastpush.http.front_door.Gate): GET /metrics for anyone,
    404 for any other path, no WebSocket. Its sockets have caps of their own; its HTTP timeouts
    and deadline sweep are the server's (the doors join the server's `front_doors`)."""

    max_body_bytes = 4096  # a scrape has no body
    max_message_bytes = 0  # never used: nothing is upgraded here
    draining = False  # serves until the server stops, so a drain can be watched to its end

    def __init__(self, endpoint: MetricsEndpoint, front_doors: set[FrontDoor], request_timeout: float,
                 keepalive_timeout: float) -> None:
        self._endpoint = endpoint
        self.front_doors = front_doors
        self.request_head_timeout_seconds = request_timeout
        self.request_body_timeout_seconds = request_timeout
        self.http_keepalive_timeout_seconds = keepalive_timeout
        self.connection_limits = ConnectionLimits(MAX_METRICS_CONNECTIONS, MAX_METRICS_CONNECTIONS)

    def handle_rest(self, request: Request) -> Response:
        if request.raw_path != METRICS_PATH:
            return error_response(404, "NotFound", "This listener serves /metrics only.")
        return self._endpoint.answer(request, authenticated=True)

    def decide_upgrade(self, request: Request) -> Response:
        return error_response(404, "NotFound", "This listener serves /metrics only.")
