"""Wildcard group roles (webpubsub.sendToGroups.<pattern>, webpubsub.joinLeaveGroups.<pattern>):
the pattern language, case by case, and how literal and pattern roles mix."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpush.permissions import Permission, RoleError, check_roles, compile_group_pattern, grants

SEND, JOIN = Permission.SEND_TO_GROUP, Permission.JOIN_LEAVE_GROUP

MATCHES = [
    ("prices.*", "prices.msft"), ("prices.*", "prices."), ("prices.**", "prices.us.msft"),
    ("prices.**", "prices."), ("**", "a.b.c"), ("*", "abc"), ("*", ""), ("a?c", "abc"), ("?", "x"),
    ("*.quotes", "msft.quotes"), ("**.quotes", "us.msft.quotes"), ("a*b*c", "a-x-b-y-c"),
    (r"a\*b", "a*b"), (r"a\?b", "a?b"), (r"a\\b", "a\\b"), ("a.b", "a.b"), ("Prices.*", "Prices.x"),
    ("a+b(c)[d]", "a+b(c)[d]"), ("g1", "g1"),
]
MISMATCHES = [
    ("prices.*", "prices.us.msft"), ("prices.*", "prices"), ("prices.**", "prices"), ("*", "a.b"),
    ("a?c", "a.c"), ("a?c", "ac"), ("?", ""), (r"a\*b", "axb"), (r"a\?b", "axb"), ("a.b", "aXb"),
    ("prices.*", "Prices.x"), ("*.quotes", "us.msft.quotes"), ("a+b", "aab"), ("g1", "g10"),
]


@pytest.mark.parametrize("pattern,group", MATCHES)
def test_pattern_matches(pattern, group):
    assert compile_group_pattern(pattern).fullmatch(group)


@pytest.mark.parametrize("pattern,group", MISMATCHES)
def test_pattern_does_not_match(pattern, group):
    assert not compile_group_pattern(pattern).fullmatch(group)


@pytest.mark.parametrize("pattern", ["******", "**.**.**", "*.*.*.*.*.*", "", "a\\", "a\\x", "\\."])
def test_unusable_patterns_are_refused(pattern):
    with pytest.raises(RoleError):
        compile_group_pattern(pattern)


def test_five_stars_are_allowed_and_escaped_stars_do_not_count():
    compile_group_pattern("*.*.*.*.*")
    compile_group_pattern("**.**.*")
    compile_group_pattern(r"*.*.*.*.*.\*\*\*")


def test_literal_and_pattern_roles_mix():
    roles = {"webpubsub.sendToGroup.lobby", "webpubsub.sendToGroups.prices.*", "webpubsub.joinLeaveGroups.news.**"}
    assert grants(roles, SEND, "lobby") and grants(roles, SEND, "prices.msft")
    assert not grants(roles, SEND, "prices.us.msft") and not grants(roles, SEND, "news.x")
    assert grants(roles, JOIN, "news.eu.sport") and not grants(roles, JOIN, "lobby")
    assert not grants(roles, SEND, None)  # a pattern is never a grant for every group
    assert grants({"webpubsub.sendToGroup"}, SEND, "anything.at.all")


def test_check_roles_names_the_bad_one():
    check_roles(["webpubsub.sendToGroups.a.*", "webpubsub.joinLeaveGroup", "custom.role.******"])
    with pytest.raises(RoleError, match="more than 5"):
        check_roles(["webpubsub.joinLeaveGroups.******"])


def _reference(pattern: str) -> re.Pattern[str]:
    """The same language, the slow obvious way: tokenize, then translate each token."""
    tokens = re.findall(r"\\.|\*\*|\*|\?|.", pattern, re.DOTALL)
    table = {"**": ".*", "*": "[^.]*", "?": "[^.]"}
    return re.compile("".join(table.get(t) or re.escape(t[-1]) for t in tokens), re.DOTALL)


@given(st.text(alphabet="ab.*?", max_size=10), st.text(alphabet="ab.*?", max_size=12))
def test_matches_the_reference_translation(pattern, group):
    try:
        compiled = compile_group_pattern(pattern)
    except RoleError:
        return
    assert bool(compiled.fullmatch(group)) == bool(_reference(pattern).fullmatch(group))
