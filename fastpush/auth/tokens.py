"""Verify and issue the HS256 tokens the Azure SDKs make.

The SDKs sign with the UTF-8 bytes of the AccessKey string itself (not its base64 decoding),
put the full request URL (query included) in a REST token's `aud`, and lower-case the endpoint
in a client token's `aud`; see shared/spec/sdk-wire-capture.md §1.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import jwt

__all__ = ["KeyRing", "TokenError", "ClientClaims", "generate_access_key", "CLOCK_SKEW_SECONDS"]

CLOCK_SKEW_SECONDS = 300
_ALGORITHMS = ["HS256"]
_OPTIONS = {"require": ["exp", "aud"], "verify_aud": False}


class TokenError(Exception):
    """The token is missing, malformed, signed with another key, expired, or for another audience."""


@dataclass(slots=True)
class ClientClaims:
    user_id: str | None
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    claims: dict = field(default_factory=dict)


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

    def _decode(self, token: str) -> dict:
        if not token:
            raise TokenError("No access token was given.")
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
            raise TokenError(f"The token's audience '{aud}' is not this hub's client endpoint "
                             f"'/client/hubs/{hub}'.")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise TokenError("The token's 'sub' claim must be a string.")
        return ClientClaims(
            user_id=sub,
            roles=_strings(claims, "role"),
            groups=_strings(claims, "webpubsub.group"),
            claims=claims,
        )

    def verify_rest(self, token: str, raw_target: str) -> dict:
        """Check a REST bearer token against the request target (path and query, as sent)."""
        claims = self._decode(token)
        aud = claims.get("aud")
        if not isinstance(aud, str) or not _rest_audience_matches(aud, raw_target):
            raise TokenError(f"The token's audience '{aud}' does not match the request URL.")
        return claims

    def issue_client(self, endpoint: str, hub: str, *, user_id: str | None = None,
                     roles: list[str] | tuple[str, ...] = (), groups: list[str] | tuple[str, ...] = (),
                     minutes_to_expire: int = 60, client_path: str = "/client/hubs/") -> str:
        """Mint a client token the way the SDKs do, for `:generateToken` and the embedding API."""
        now = int(time.time())
        claims: dict = {"aud": endpoint.rstrip("/") + client_path + hub, "iat": now,
                        "exp": now + 60 * minutes_to_expire}
        if user_id is not None:
            claims["sub"] = user_id
        if roles:
            claims["role"] = list(roles)
        if groups:
            claims["webpubsub.group"] = list(groups)
        return jwt.encode(claims, self.primary.encode(), algorithm="HS256")


def _strings(claims: dict, name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenError(f"The token's '{name}' claim must be a string or a list of strings.")


def _client_audience_matches(aud: str, hub: str) -> bool:
    parts = urlsplit(aud)
    if parts.scheme.lower() not in ("http", "https", "ws", "wss") or not parts.netloc:
        return False
    path = unquote(parts.path).rstrip("/").lower()
    # Any path prefix in front of /client (an API gateway's) is allowed, as the SDKs keep it.
    return path.endswith(("/client/hubs/" + hub).lower())


def _rest_audience_matches(aud: str, raw_target: str) -> bool:
    parts = urlsplit(aud)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return False
    target_path, _, target_query = raw_target.partition("?")
    aud_path = parts.path.rstrip("/")
    if not (aud_path == target_path.rstrip("/")
            or unquote(aud_path).lower() == unquote(target_path).rstrip("/").lower()
            or _ends_with_path(aud_path, target_path)):
        return False
    return not parts.query or parts.query == target_query or unquote(parts.query) == unquote(target_query)


def _ends_with_path(aud_path: str, target_path: str) -> bool:
    """A reverse proxy may strip a prefix: accept an aud whose path ends with the target's path."""
    target = unquote(target_path).rstrip("/").lower()
    return bool(target) and unquote(aud_path).lower().endswith(target)
