"""Web PubSub access tokens for the benchmark's clients: HS256 over the access key's UTF-8 bytes,
`aud` = the URL they are used for, valid for an hour (longer than any run)."""
from __future__ import annotations

import time

import jwt

__all__ = ["client_path", "rest_send_url", "sign"]

API_VERSION = "2024-12-01"
VALID_SECONDS = 3600


def sign(audience: str, access_key: str) -> str:
    claims = {"aud": audience, "exp": int(time.time()) + VALID_SECONDS}
    return jwt.encode(claims, access_key.encode(), algorithm="HS256")


def client_path(endpoint: str, hub: str, access_key: str) -> str:
    """The request target a subscriber upgrades on (the peers ignore the token)."""
    token = sign(f"{endpoint}/client/hubs/{hub}", access_key)
    return f"/client/hubs/{hub}?access_token={token}"


def rest_send_url(endpoint: str, hub: str) -> str:
    return f"{endpoint}/api/hubs/{hub}/:send?api-version={API_VERSION}"
