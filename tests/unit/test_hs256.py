"""fastpush.auth.hs256, the fast path for plain HS256 tokens: it takes the SDKs' tokens, and whatever
it accepts pyjwt accepts with the same claims; on everything else it steps aside (None), so pyjwt's
answer stands."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from fastpush.auth import hs256, tokens
from fastpush.auth.tokens import CLOCK_SKEW_SECONDS, KeyRing

KEY = "b3Blbi1zZXNhbWUtdGhpcy1pcy1hLWJlbmNoLWtleS0zMi1ieXRlcw=="
OTHER = "c2Vjb25kYXJ5LWtleS1mb3ItdGhlLXJvdGF0aW9uLXRlc3Q="
PEM_LIKE = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"

AUD = "http://localhost/client/hubs/chat"
_OPTIONS = {"require": ["exp", "aud"], "verify_aud": False}


def _now() -> int:
    """Read when a token is made (at test time: the suite may run long after collection)."""
    return int(time.time())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: object, claims: object, key: str = KEY, *, pad: bool = False) -> str:
    """A token assembled by hand, so header and claims can be anything JSON can say."""
    segments = [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode())]
    signed = ".".join(segments).encode()
    segments.append(_b64(hmac.digest(key.encode(), signed, hashlib.sha256)))
    token = ".".join(segments)
    return token.replace(".", "=.", 1) if pad else token


def _claims(**extra: object) -> dict[str, object]:
    return {"aud": AUD, "exp": _now() + 3600, "iat": _now(), **extra}


HS256 = {"alg": "HS256", "typ": "JWT"}
CORPUS: dict[str, Callable[[], str]] = {
    "plain": lambda: _raw(HS256, _claims(sub="alice", role=["webpubsub.joinLeaveGroup"])),
    "no typ": lambda: _raw({"alg": "HS256"}, _claims()),
    "signed with the other key": lambda: _raw(HS256, _claims(), OTHER),
    "signed with a stranger's key": lambda: _raw(HS256, _claims(), "stranger"),
    "expired": lambda: _raw(HS256, _claims(exp=_now() - CLOCK_SKEW_SECONDS - 10)),
    "expired within the skew": lambda: _raw(HS256, _claims(exp=_now() - 10)),
    "exp a float": lambda: _raw(HS256, _claims(exp=_now() + 3600.5)),
    "exp a string": lambda: _raw(HS256, _claims(exp=str(_now() + 3600))),
    "exp true": lambda: _raw(HS256, _claims(exp=True)),
    "exp null": lambda: _raw(HS256, _claims(exp=None)),
    "no exp": lambda: _raw(HS256, {"aud": AUD}),
    "no aud": lambda: _raw(HS256, {"exp": _now() + 3600}),
    "aud null": lambda: _raw(HS256, _claims(aud=None)),
    "nbf in the future": lambda: _raw(HS256, _claims(nbf=_now() + CLOCK_SKEW_SECONDS + 60)),
    "nbf a string": lambda: _raw(HS256, _claims(nbf="soon")),
    "iat in the future": lambda: _raw(HS256, _claims(iat=_now() + CLOCK_SKEW_SECONDS + 60)),
    "iat a float": lambda: _raw(HS256, _claims(iat=_now() + 0.5)),
    "sub a number": lambda: _raw(HS256, _claims(sub=7)),
    "jti a list": lambda: _raw(HS256, _claims(jti=["x"])),
    "payload a list": lambda: _raw(HS256, [AUD]),
    "alg none": lambda: _raw({"alg": "none", "typ": "JWT"}, _claims()),
    "alg HS512": lambda: _raw({"alg": "HS512", "typ": "JWT"}, _claims()),
    "a kid": lambda: _raw({**HS256, "kid": 5}, _claims()),
    "a crit header": lambda: _raw({**HS256, "crit": ["b64"], "b64": False}, _claims()),
    "typ other": lambda: _raw({"alg": "HS256", "typ": "at+jwt"}, _claims()),
    "padded header": lambda: _raw(HS256, _claims(), pad=True),
    "four segments": lambda: _raw(HS256, _claims()) + ".e30",
    "bad base64": lambda: "e30$." + _raw(HS256, _claims()).split(".", 1)[1],
    "not ascii": lambda: _raw(HS256, _claims()) + "é",
    "signature cut": lambda: _raw(HS256, _claims())[:-3],
    "empty segments": lambda: "..",
}


def _pyjwt(token: str, keys: list[str]) -> dict[str, object] | None:
    for key in keys:
        try:
            return jwt.decode(token, key.encode(), algorithms=["HS256"], options=_OPTIONS,  # type: ignore[arg-type]
                              leeway=CLOCK_SKEW_SECONDS)
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            return None
    return None


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_accepts_only_what_pyjwt_accepts_with_the_same_claims(case: str) -> None:
    token = CORPUS[case]()
    fast = hs256.accept(token, [KEY.encode(), OTHER.encode()], time.time(), CLOCK_SKEW_SECONDS)
    assert fast is None or fast == _pyjwt(token, [KEY, OTHER])


def test_takes_the_plain_tokens_itself() -> None:
    """The point of the fast path: the plain tokens never reach pyjwt."""
    keys = [KEY.encode(), OTHER.encode()]
    for case in ("plain", "no typ", "signed with the other key", "expired within the skew"):
        assert hs256.accept(CORPUS[case](), keys, time.time(), CLOCK_SKEW_SECONDS) is not None, case


def test_takes_the_python_sdk_token_without_pyjwt(monkeypatch: pytest.MonkeyPatch) -> None:
    client = WebPubSubServiceClient.from_connection_string(
        f"Endpoint=http://localhost;AccessKey={KEY};Version=1.0;", hub="chat")
    url = client.get_client_access_token(user_id="bob", roles=["webpubsub.sendToGroup"], groups=["g"])["url"]
    token = url.split("access_token=", 1)[1]

    def pyjwt_must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast path should have taken this token")

    monkeypatch.setattr(tokens.jwt, "decode", pyjwt_must_not_run)
    claims = KeyRing(KEY).verify_client(token, "chat")
    assert (claims.user_id, list(claims.groups), list(claims.roles)) == ("bob", ["g"], ["webpubsub.sendToGroup"])


def test_refusals_are_still_pyjwt_s() -> None:
    with pytest.raises(tokens.TokenError, match="expired"):
        KeyRing(KEY).verify_client(CORPUS["expired"](), "chat")
    with pytest.raises(tokens.TokenError, match="Invalid access token"):
        KeyRing(KEY).verify_client(CORPUS["signed with a stranger's key"](), "chat")


def test_a_key_pyjwt_refuses_never_signs_for_the_fast_path() -> None:
    """pyjwt will not use a key that looks like a public key as an HMAC secret, so neither does
    the fast path: a token signed with it is refused as before."""
    with pytest.raises(tokens.TokenError, match="Invalid access token"):
        KeyRing(PEM_LIKE).verify_client(_raw(HS256, _claims(), PEM_LIKE), "chat")
