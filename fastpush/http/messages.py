"""Parsed HTTP requests and serialized responses: plain values, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

import msgspec

__all__ = ["Request", "Response", "error_response", "json_response", "empty_response"]

_json = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Request:
    method: str
    raw_target: str  # path and query exactly as sent: the REST token's audience is computed from it
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes = b""
    secure: bool = False
    peer: str = ""  # the client's IP address as the socket sees it (behind a proxy: the proxy's)
    _query: dict[str, list[str]] | None = field(default=None, repr=False)

    @property
    def raw_path(self) -> str:
        return self.raw_target.partition("?")[0]

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.raw_target.partition("?")[2], keep_blank_values=True)
        return self._query

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def query_one_ci(self, name: str) -> str | None:
        """A query parameter looked up case-insensitively (`maxpagesize` vs `maxPageSize`)."""
        lowered = name.lower()
        for key, values in self.query.items():
            if key.lower() == lowered and values:
                return values[-1]
        return None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def serialize(self, *, head: bool = False, keep_alive: bool = True) -> bytes:
        reason = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else ""
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Content-Length: {len(self.body)}"]
        if self.content_type:
            lines.append(f"Content-Type: {self.content_type}")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if not keep_alive:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head_bytes if head else head_bytes + self.body


def error_response(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """REST errors are JSON `{"code", "message"}` (never a bare body the Python SDK cannot decode)."""
    return Response(status, _json({"code": code, "message": message}), "application/json",
                    (("x-ms-error-code", code), *headers))


def json_response(status: int, value: object) -> Response:
    return Response(status, _json(value), "application/json")


def empty_response(status: int) -> Response:
    return Response(status)
