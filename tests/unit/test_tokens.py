"""Token rules as the SDKs sign them (shared/spec/sdk-wire-capture.md §1)."""
import time

import jwt
import pytest

from fastpush.auth.tokens import KeyRing, TokenError

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"


def sign(claims, key=KEY, **kw):
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, key.encode(), algorithm="HS256", **kw)


def test_client_token_claims_and_case_insensitive_audience():
    ring = KeyRing(KEY)
    claims = ring.verify_client(sign({"aud": "http://127.0.0.1:8080/client/hubs/MyHub", "sub": "u",
                                      "role": ["a", "b"], "webpubsub.group": "g"}), "myhub")
    assert (claims.user_id, claims.roles, claims.groups) == ("u", ("a", "b"), ("g",))


def test_key_is_the_literal_string_not_its_base64_decoding():
    import base64
    decoded = base64.b64decode(KEY)
    token = jwt.encode({"aud": "http://h/client/hubs/x", "exp": int(time.time()) + 60}, decoded, algorithm="HS256")
    with pytest.raises(TokenError):
        KeyRing(KEY).verify_client(token, "x")


@pytest.mark.parametrize("aud", ["http://h/client/hubs/other", "ftp://h/client/hubs/x", "x"])
def test_wrong_client_audience(aud):
    with pytest.raises(TokenError):
        KeyRing(KEY).verify_client(sign({"aud": aud}), "x")


def test_expiry_has_clock_skew_but_not_more():
    ring = KeyRing(KEY)
    ring.verify_client(sign({"aud": "http://h/client/hubs/x", "exp": int(time.time()) - 30}), "x")
    with pytest.raises(TokenError, match="expired"):
        ring.verify_client(sign({"aud": "http://h/client/hubs/x", "exp": int(time.time()) - 3600}), "x")


def test_secondary_key_and_unknown_key():
    ring = KeyRing(KEY, "second")
    ring.verify_client(sign({"aud": "http://h/client/hubs/x"}, key="second"), "x")
    with pytest.raises(TokenError):
        ring.verify_client(sign({"aud": "http://h/client/hubs/x"}, key="third"), "x")


def test_rest_audience_with_or_without_query():
    ring = KeyRing(KEY)
    target = "/api/hubs/h/:send?excluded=a&api-version=2024-12-01"
    ring.verify_rest(sign({"aud": "http://127.0.0.1:1" + target}), target)
    ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/h/:send"}), target)
    with pytest.raises(TokenError):
        ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/h/:send?api-version=2021-10-01"}), target)
    with pytest.raises(TokenError):
        ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/other/:send"}), target)


def test_missing_exp_and_other_algorithms_are_refused():
    ring = KeyRing(KEY)
    with pytest.raises(TokenError):
        ring.verify_client(jwt.encode({"aud": "http://h/client/hubs/x"}, KEY.encode(), algorithm="HS256"), "x")
    with pytest.raises(TokenError):
        ring.verify_client(jwt.encode({"aud": "http://h/client/hubs/x", "exp": int(time.time()) + 60},
                                      KEY.encode(), algorithm="HS512"), "x")


def test_issued_tokens_verify():
    ring = KeyRing(KEY)
    token = ring.issue_client("http://h:1", "x", user_id="u", roles=["r"], groups=["g"])
    assert ring.verify_client(token, "x").groups == ("g",)
