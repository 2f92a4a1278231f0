"""The common HS256 token checked without pyjwt: a reconnect storm is mostly token checks.

pyjwt spends about 200 us on a client token (it checks every base64 character in Python and
re-examines the key on each call); a whole worker restarting at once verifies tens of thousands.
`accept` vouches only for the plainest token, the kind every SDK signs: header exactly `alg` HS256
(and `typ` JWT), canonical unpadded base64url, a JSON object payload with an integer `exp` (and `nbf`,
`iat` when present), string `sub`/`jti` when present, an `aud`, and an HMAC that matches one of the
keys. Whatever else it meets, it answers None and the caller asks pyjwt, which then accepts or
refuses exactly as before: this path never refuses, and never accepts what pyjwt would refuse.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence

__all__ = ["accept"]

_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")
_HEADERS = ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256"})
_INTEGER_CLAIMS = ("exp", "nbf", "iat")


def accept(token: str, keys: Sequence[bytes], now: float, leeway: float) -> dict[str, object] | None:
    """The token's claims if it is a plain, valid HS256 token signed with one of `keys`; else None."""
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        return None
    parts = raw.split(b".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        return None
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_decode(header_b64))
        signature = _decode(signature_b64)
    except (ValueError, binascii.Error, RecursionError):  # RecursionError: JSON nested too deep
        return None
    if header not in _HEADERS:
        return None
    signed = header_b64 + b"." + payload_b64
    if not any(hmac.compare_digest(hmac.digest(key, signed, hashlib.sha256), signature) for key in keys):
        return None
    try:
        claims = json.loads(_decode(payload_b64))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return claims if isinstance(claims, dict) and _valid(claims, now, leeway) else None


def _decode(segment: bytes) -> bytes:
    """Unpadded base64url (the alphabet is checked by the caller)."""
    if len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def _valid(claims: dict[str, object], now: float, leeway: float) -> bool:
    """What pyjwt checks with fastpush's options, for the plain cases only."""
    if claims.get("aud") is None or claims.get("exp") is None:
        return False
    for name in _INTEGER_CLAIMS:
        if name in claims and type(claims[name]) is not int:
            return False
    if claims["exp"] <= now - leeway:  # type: ignore[operator]  # an int: checked above
        return False
    if any(name in claims and claims[name] > now + leeway for name in ("nbf", "iat")):  # type: ignore[operator]
        return False
    return all(isinstance(claims[name], str) for name in ("sub", "jti") if name in claims)
