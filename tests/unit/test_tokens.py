"""Token rules as the SDKs sign them (the rule is stated in fastpush/auth/tokens.py's docstring)."""
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


ORIGINS = ("http://127.0.0.1:1",)


def test_rest_audience_with_or_without_query():
    ring = KeyRing(KEY)
    target = "/api/hubs/h/:send?excluded=a&api-version=2024-12-01"
    ring.verify_rest(sign({"aud": "http://127.0.0.1:1" + target}), target, ORIGINS)
    ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/h/:send"}), "/api/hubs/h/:send?api-version=1", ORIGINS)
    with pytest.raises(TokenError, match="query"):  # no query in aud: good only without parameters
        ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/h/:send"}), target, ORIGINS)
    with pytest.raises(TokenError, match="query"):
        ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/h/:send?api-version=2021-10-01"}), target, ORIGINS)
    with pytest.raises(TokenError, match="path"):
        ring.verify_rest(sign({"aud": "http://127.0.0.1:1/api/hubs/other/:send"}), target, ORIGINS)


@pytest.mark.parametrize("aud, target", [
    # what the Python SDK signs and sends (query order and %20/+ spelling aside)
    ("http://127.0.0.1:1/api/hubs/h/users/a%2Fb/:send?api-version=2024-12-01",
     "/api/hubs/h/users/a%2Fb/:send?api-version=2024-12-01"),
    ("http://127.0.0.1:1/api/hubs/h/:send?excluded=a%20b&excluded=c&filter=x%20eq%20%27y%27",
     "/api/hubs/h/:send?filter=x+eq+'y'&excluded=c&excluded=a+b"),
    ("http://127.0.0.1:1/api/hubs/h/users/x%21y%7E/:send", "/api/hubs/h/users/x!y~/:send"),  # re-encoded in transit
    ("HTTP://127.0.0.1:1/api/hubs/h/:send", "/api/hubs/h/:send"),
    ("http://example.com/api/hubs/h/:send", "/api/hubs/h/:send"),  # the public endpoint, default port
])
def test_rest_audience_accepted(aud, target):
    KeyRing(KEY).verify_rest(sign({"aud": aud}), target, (*ORIGINS, "http://example.com:80"))


@pytest.mark.parametrize("aud, target, reason", [
    ("http://127.0.0.1:1/api/hubs/h/groups/admins/:send", "/api/hubs/h/groups/ADMINS/:send", "path"),
    ("http://127.0.0.1:1/api/hubs/h/users/x%2Fgroups%2Fy", "/api/hubs/h/users/x/groups/y", "path"),
    ("http://127.0.0.1:1/api/hubs/h/users/x/groups/y", "/api/hubs/h/users/x%2Fgroups%2Fy", "path"),
    ("http://127.0.0.1:1/api/hubs/h/users/u/:send", "/api/hubs/h/:send", "path"),
    ("http://127.0.0.1:1/prefix/api/hubs/h/:send", "/api/hubs/h/:send", "path"),
    ("http://127.0.0.1:1/api/hubs/h/:send/", "/api/hubs/h/:send", "path"),
    ("http://127.0.0.1:1/api/hubs/h/users/../:send", "/api/hubs/h/:send", "path"),
    ("http://127.0.0.1:1/api/hubs/h/:send", "/api/hubs/h/:send?filter=userId%20eq%20'x'", "query"),
    ("http://127.0.0.1:1/api/hubs/h/:send", "/api/hubs/h/:send?excluded=c1&api-version=2024-12-01", "query"),
    ("http://127.0.0.1:1/api/hubs/h/:send?excluded=a", "/api/hubs/h/:send?excluded=a&excluded=b", "query"),
    ("http://evil.example:1/api/hubs/h/:send", "/api/hubs/h/:send", "host"),
    ("http://127.0.0.1:2/api/hubs/h/:send", "/api/hubs/h/:send", "port"),
    ("https://127.0.0.1:1/api/hubs/h/:send", "/api/hubs/h/:send", "scheme"),
    ("ws://127.0.0.1:1/api/hubs/h/:send", "/api/hubs/h/:send", "http"),
    ("http://user@127.0.0.1:1/api/hubs/h/:send", "/api/hubs/h/:send", "user info"),
    ("http://127.0.0.1:1/api/hubs/h/:send#x", "/api/hubs/h/:send", "fragment"),
    ("http://[::1/api/hubs/h/:send", "/api/hubs/h/:send", "http"),
    ("http://127.0.0.1:99999/api/hubs/h/:send", "/api/hubs/h/:send", "http"),
    ("/api/hubs/h/:send", "/api/hubs/h/:send", "http"),
])
def test_rest_audience_refused(aud, target, reason):
    with pytest.raises(TokenError, match=reason):
        KeyRing(KEY).verify_rest(sign({"aud": aud}), target, ORIGINS)


@pytest.mark.parametrize("aud", [["http://127.0.0.1:1/api/hubs/h/:send"], 1, None])
def test_rest_audience_must_be_one_string(aud):
    with pytest.raises(TokenError, match="aud"):
        KeyRing(KEY).verify_rest(sign({"aud": aud}), "/api/hubs/h/:send", ORIGINS)


def test_unreadable_client_audience_is_a_token_error():
    with pytest.raises(TokenError):
        KeyRing(KEY).verify_client(sign({"aud": "http://[::1/client/hubs/x"}), "x")


@pytest.mark.parametrize("sub", ["a\r\nX-Injected: 1", "nul\x00", "u" * 1025])
def test_client_sub_with_control_characters_or_too_long_is_refused(sub):
    with pytest.raises(TokenError, match="sub"):
        KeyRing(KEY).verify_client(sign({"aud": "http://h/client/hubs/x", "sub": sub}), "x")


@pytest.mark.parametrize("claim", [{"exp": "tomorrow"}, {"exp": [1]}, {"nbf": "now"}, {"iat": {"a": 1}}])
def test_claims_of_the_wrong_type_are_token_errors(claim):
    with pytest.raises(TokenError, match="must be an integer"):
        KeyRing(KEY).verify_client(sign({"aud": "http://h/client/hubs/x", **claim}), "x")


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
