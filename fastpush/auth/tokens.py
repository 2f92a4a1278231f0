"""Verify and issue the HS256 tokens the Azure SDKs make.

Keys: the SDKs sign with the UTF-8 bytes of the AccessKey string itself (not its base64 decoding).
Only HS256 is accepted; `exp` and `aud` are required; `nbf`/`iat` in the future are refused; a
skew of CLOCK_SKEW_SECONDS is allowed. A client token's `aud` must name `/client/hubs/{hub}`
(case-insensitively: the SDKs lower-case the endpoint; any gateway prefix before `/client` is kept).

REST tokens. What the official SDKs put in `aud` is the full request URL, query included, as their
pipeline is about to send it:
  * Python azure-messaging-webpubsubservice 1.3.0, JwtCredentialPolicy.on_request:
    `request.http_request.url`, path values quoted with quote(safe=""), query `excluded=a%20b&
    api-version=...&filter=...`; with `reverse_proxy_endpoint` the connection string's endpoint is
    put back in place of the proxy's.
  * JS @azure/web-pubsub 1.2.0, webPubSubKeyCredentialPolicy: `request.url` (encodeURIComponent
    values), signed before its reverse-proxy policy swaps the host.
  * Java azure-messaging-webpubsub 1.0.0, WebPubSubAuthenticationPolicy: `getUrl().toString()`.
  Azure's REST reference says the same: "aud: Should be the SAME as your HTTP request url".
A transport may re-encode the URL after signing (requests' requote_uri, yarl), so the two URLs
are compared by what they mean to this server. A REST token is accepted for a request when its
`aud` is a string and
  1. scheme, host (case-insensitive) and port (the scheme's default when absent) are those the
     server is addressed by: the request's Host header with the connection's scheme, or the public
     endpoint (Server.endpoint: --public-host, which may be `name`, `name:port` or
     `https://name[:port]` for a TLS-terminating proxy); no user info, no fragment;
  2. the path, split on "/" and each segment percent-decoded (how the router reads it, so `a%2Fb`
     is one segment), equals the request's exactly: case-sensitive, no prefix or suffix match, no
     dot-segment resolution. A reverse proxy that strips a path prefix is not supported;
  3. the query, read as (name, value) pairs the way the router reads it, equals the request's
     (order aside); or `aud` has no query and the request's carries nothing but `api-version`
     (hand-written tokens for parameterless calls; no SDK signs so).
The HTTP method is not part of `aud` (nor of Azure's check): within its lifetime a token for
`PUT .../groups/g/connections/c` also authorizes `DELETE` of that same URL.
"""
from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.types import Options

from ..permissions import RoleError, check_roles
from ..protocol.names import is_valid_user, user_error
from . import hs256

__all__ = ["KeyRing", "TokenError", "ClientClaims", "generate_access_key", "path_segments", "CLOCK_SKEW_SECONDS"]

CLOCK_SKEW_SECONDS = 300
_ALGORITHMS = ["HS256"]
_OPTIONS: Options = {"require": ["exp", "aud"], "verify_aud": False}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHOWN_CHARS = 200  # how much of an attacker-chosen audience a refusal echoes


class TokenError(Exception):
    """The token is missing, malformed, signed with another key, expired, or for another audience."""


@dataclass(slots=True)
class ClientClaims:
    user_id: str | None
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    claims: dict[str, object] = field(default_factory=dict)  # the whole decoded token


def _hmac_key(key: bytes) -> bool:
    """Whether pyjwt takes `key` as an HMAC secret (it refuses what looks like a public key or a
    certificate): only then may hs256 accept a token signed with it."""
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
    except jwt.InvalidKeyError:
        return False
    return True


def generate_access_key() -> str:
    """A 44-character base64 key, the shape Azure's keys have."""
    import base64
    return base64.b64encode(secrets.token_bytes(32)).decode()


class KeyRing:
    """The primary and optional secondary access keys; a token signed with either is accepted."""

    def __init__(self, primary: str, secondary: str | None = None):
        if not primary:
            raise ValueError("an access key must not be empty")
        self.primary = primary
        self.secondary = secondary or None
        self._keys = [k.encode() for k in (primary, secondary) if k]
        self._plain_keys = [key for key in self._keys if _hmac_key(key)]  # what hs256 may check with

    def is_access_key(self, text: str) -> bool:
        """Whether `text` is one of the keys itself (a /metrics bearer), compared with every key in
        constant time, whichever matches."""
        given = text.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        return matched

    def _decode(self, token: str) -> dict[str, object]:
        if not token:
            raise TokenError("No access token was given.")
        claims = hs256.accept(token, self._plain_keys, time.time(), CLOCK_SKEW_SECONDS)
        if claims is not None:
            return claims
        last: Exception | None = None
        for key in self._keys:
            try:
                return jwt.decode(token, key, algorithms=_ALGORITHMS, options=_OPTIONS,
                                  leeway=CLOCK_SKEW_SECONDS)
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.ExpiredSignatureError:
                raise TokenError("The access token has expired.") from None
            except jwt.PyJWTError as exc:
                raise TokenError(f"Invalid access token: {exc}") from None
        raise TokenError(f"Invalid access token: {last}")

    def verify_client(self, token: str, hub: str) -> ClientClaims:
        """Check a client token for `hub`: its aud must name `/client/hubs/{hub}` (case-insensitive)."""
        claims = self._decode(token)
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and _client_audience_matches(a, hub) for a in audiences):
            raise TokenError(f"The token's audience '{_shown(aud)}' is not this hub's client endpoint "
                             f"'/client/hubs/{hub}'.")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise TokenError("The token's 'sub' claim must be a string.")
        if sub and not is_valid_user(sub):
            # The user id travels in upstream headers (ce-userId): no CR/LF can reach them.
            raise TokenError("The token's 'sub' claim: " + user_error(sub))
        roles = _strings(claims, "role")
        try:
            check_roles(roles)
        except RoleError as exc:
            raise TokenError(f"The token's 'role' claim: {exc}.") from None
        return ClientClaims(
            user_id=sub,
            roles=roles,
            groups=_strings(claims, "webpubsub.group"),
            claims=claims,
        )

    def verify_rest(self, token: str, raw_target: str, origins: Iterable[str]) -> dict[str, object]:
        """Check a REST bearer token against the request target (path and query, as sent) and the
        origins (`scheme://host[:port]`) the server is addressed by; the rule is the module's."""
        claims = self._decode(token)
        aud = claims.get("aud")
        if not isinstance(aud, str):
            raise TokenError(f"The token's audience must be the request URL, not '{_shown(aud)}'.")
        mismatch = _rest_audience_mismatch(aud, raw_target, origins)
        if mismatch:
            raise TokenError(f"The token's audience '{_shown(aud)}' is not this request's URL: {mismatch}.")
        return claims

    def issue_client(self, endpoint: str, hub: str, *, user_id: str | None = None,
                     roles: list[str] | tuple[str, ...] = (), groups: list[str] | tuple[str, ...] = (),
                     minutes_to_expire: int = 60) -> str:
        """Mint a client token the way the SDKs do, for `:generateToken` and the embedding API."""
        now = int(time.time())
        claims: dict[str, object] = {"aud": endpoint.rstrip("/") + "/client/hubs/" + hub, "iat": now,
                        "exp": now + 60 * minutes_to_expire}
        if user_id is not None:
            claims["sub"] = user_id
        if roles:
            claims["role"] = list(roles)
        if groups:
            claims["webpubsub.group"] = list(groups)
        return jwt.encode(claims, self.primary.encode(), algorithm="HS256")


def _strings(claims: dict[str, object], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenError(f"The token's '{name}' claim must be a string or a list of strings.")


def path_segments(raw_path: str) -> list[str]:
    """A path as the router reads it: the segments after the first "/", each percent-decoded."""
    return [unquote(segment) for segment in raw_path.split("/")[1:]]


def _shown(value: object) -> str:
    return str(value)[:_SHOWN_CHARS]


def _split(url: str) -> SplitResult | None:
    """urlsplit, with None for what it cannot read (an unclosed IPv6 bracket, a bad port)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return None
    return parts


def _client_audience_matches(aud: str, hub: str) -> bool:
    parts = _split(aud)
    if parts is None or parts.scheme.lower() not in ("http", "https", "ws", "wss") or not parts.netloc:
        return False
    path = unquote(parts.path).rstrip("/").lower()
    # Any path prefix in front of /client (an API gateway's) is allowed, as the SDKs keep it.
    return path.endswith(("/client/hubs/" + hub).lower())


def _origin(parts: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL without user info; None for anything else."""
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower(), parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]


def _rest_audience_mismatch(aud: str, raw_target: str, origins: Iterable[str]) -> str | None:
    """Why `aud` does not name this request (None when it does)."""
    parts = _split(aud)
    if parts is None or _origin(parts) is None or parts.fragment:
        return "it is not an http(s) URL without user info or fragment"
    allowed = {_origin(origin) for origin in map(_split, origins) if origin is not None}
    if _origin(parts) not in allowed:
        return "another scheme, host or port than this server's"
    target_path, _, target_query = raw_target.partition("?")
    if not parts.path.startswith("/") or path_segments(parts.path) != path_segments(target_path):
        return "another path"
    if not _same_query(parts.query, target_query):
        return "another query (the SDKs sign the request's full query string)"
    return None


def _same_query(aud_query: str, target_query: str) -> bool:
    """Equal as (name, value) pairs; a query-less audience is good only for a request that has no
    parameter but api-version."""
    target = sorted(parse_qsl(target_query, keep_blank_values=True))
    if not aud_query:
        return all(name == "api-version" for name, _ in target)
    return sorted(parse_qsl(aud_query, keep_blank_values=True)) == target
