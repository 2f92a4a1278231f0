"""OData filter expressions: parsing, typing, null semantics and limits, without sockets."""
import random
from dataclasses import dataclass, field
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpush.protocol.odata_filter import (
    MAX_CLAUSES,
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    FilterError,
    compile_filter,
)


@dataclass(frozen=True)
class Conn:
    connection_id: str = "c-1"
    user_id: str | None = "alice"
    groups: frozenset[str] = field(default_factory=frozenset)
    protocol: str | None = None


def conn(user: str | None = "alice", *groups: str, cid: str = "c-1", protocol: str | None = None) -> Conn:
    return Conn(cid, user, frozenset(groups), protocol)


def matches(text: str, connection: Conn) -> bool:
    result = compile_filter(text)(connection)
    assert type(result) is bool
    return result


def error(text: str) -> str:
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    return str(info.value)


ALICE = conn("alice", "room1")
BOB = conn("bob", "room2", "muted")
NOBODY = conn(None, "room1", "g1")


# -- the documented examples ----------------------------------------------------------------------

@pytest.mark.parametrize("text, connection, expected", [
    ("'room1' in groups or 'room2' in groups", ALICE, True),
    ("'room1' in groups or 'room2' in groups", BOB, True),
    ("'room1' in groups or 'room2' in groups", conn("x", "room3"), False),
    ("userId in ('alice', 'bob') and 'room1' in groups", ALICE, True),
    ("userId in ('alice', 'bob') and 'room1' in groups", BOB, False),
    ("userId in ('alice', 'bob') and 'room1' in groups", NOBODY, False),
    ("userId eq 'alice' and connectionId ne 'c-123'", ALICE, True),
    ("userId eq 'alice' and connectionId ne 'c-123'", conn("alice", cid="c-123"), False),
    ("userId eq 'alice' and (not ('muted' in groups))", ALICE, True),
    ("userId eq 'alice' and (not ('muted' in groups))", conn("alice", "muted"), False),
    ("startswith(userId, 'listener-')", conn("listener-7"), True),
    ("startswith(userId, 'listener-')", ALICE, False),
    ("startswith(userId, 'listener-')", NOBODY, False),
    ("userId ne 'user1' and 'g1' in groups", NOBODY, True),
    ("userId ne 'user1' and 'g1' in groups", conn("user1", "g1"), False),
    ("userId ne 'user1' and 'g1' in groups", ALICE, False),
    ("length(groups) ge 2", BOB, True),
    ("length(groups) ge 2", ALICE, False),
    ("indexof(tolower(userId), 'bo') eq 0", conn("BOb"), True),
    ("indexof(tolower(userId), 'bo') eq 0", conn("ebo"), False),
    ("indexof(tolower(userId), 'bo') eq 0", NOBODY, False),
])
def test_composed_examples(text, connection, expected):
    assert matches(text, connection) is expected


def test_azure_doc_examples_compile():
    for text in ["length(userId) le 10 and length(userId) gt 3", "length(userId) gt 10 or length(userId) le 3",
                 "not endswith(userId, 'milk')", "userId eq null", "userId ne null",
                 "userId eq 'user1' or (not (startswith(userId, 'user')))", "userId in ('user1','user2')"]:
        compile_filter(text)


# -- operators ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op, smaller, equal, larger", [
    ("eq", False, True, False), ("ne", True, False, True), ("gt", False, False, True),
    ("ge", False, True, True), ("lt", True, False, False), ("le", True, True, False),
])
def test_comparisons_on_strings_and_integers(op, smaller, equal, larger):
    for user, expected in (("alicd", smaller), ("alice", equal), ("alicf", larger)):
        assert matches(f"userId {op} 'alice'", conn(user)) is expected
    for user, expected in (("abcd", smaller), ("abcde", equal), ("abcdef", larger)):
        assert matches(f"length(userId) {op} 5", conn(user)) is expected
    assert matches(f"2 {op} 10", ALICE) is smaller  # numeric, not textual
    assert matches(f"'2' {op} '10'", ALICE) is larger  # ordinal, not numeric


def test_strings_compare_ordinally_and_case_sensitively():
    assert matches("userId lt 'a'", conn("Z"))
    assert not matches("userId eq 'Alice'", ALICE)
    assert matches("'\u00e9' gt 'z'", ALICE)


@pytest.mark.parametrize("a", ["true", "false", "null"])
@pytest.mark.parametrize("b", ["true", "false", "null"])
def test_three_valued_logic(a, b):
    value = {"true": True, "false": False, "null": None}
    x, y = value[a], value[b]
    both = False if False in (x, y) else None if None in (x, y) else True
    either = True if True in (x, y) else None if None in (x, y) else False
    assert matches(f"{a} and {b}", ALICE) is (both is True)
    assert matches(f"{a} or {b}", ALICE) is (either is True)
    assert matches(f"not ({a} and {b})", ALICE) is (both is False)
    assert matches(f"not ({a} or {b})", ALICE) is (either is False)
    assert matches(f"({a} and {b}) eq null", ALICE) is (both is None)
    assert matches(f"({a} or {b}) eq null", ALICE) is (either is None)


def test_not():
    assert matches("not false", ALICE) and not matches("not true", ALICE)
    assert not matches("not null", ALICE) and not matches("not not null", ALICE)
    assert matches("not not true", ALICE) and matches("(not null) eq null", ALICE)
    assert matches("not ('muted' in groups)", ALICE) and not matches("not ('muted' in groups)", BOB)
    assert matches(" ".join(["not"] * 2000) + " true", ALICE)


def test_in_list_and_in_groups():
    assert matches("userId in ('bob', 'alice')", ALICE)
    assert not matches("userId in ('bob')", ALICE)
    assert matches("length(userId) in (1, 5, 9)", ALICE)
    assert matches("'room1' in groups", ALICE) and not matches("'room1' in groups", BOB)
    assert matches("'room1' in (groups)", ALICE)
    assert matches("tolower(userId) in ('alice')", conn("ALICE"))
    assert matches("(userId eq 'alice') in (true)", ALICE)
    assert matches("concat('ro', 'om1') in groups", ALICE)
    assert not matches("'ROOM1' in groups", ALICE)


def test_functions():
    user = conn("  Hello World  ")
    cases = {
        "tolower(userId) eq '  hello world  '": True,
        "toupper(userId) eq '  HELLO WORLD  '": True,
        "trim(userId) eq 'Hello World'": True,
        "substring(trim(userId), 6) eq 'World'": True,
        "substring(trim(userId), 0, 5) eq 'Hello'": True,
        "substring(trim(userId), 6, 100) eq 'World'": True,
        "substring(trim(userId), 100) eq ''": True,
        "substring(trim(userId), -3, 2) eq 'He'": True,
        "substring(trim(userId), 1, -2) eq ''": True,
        "endswith(trim(userId), 'World')": True,
        "endswith(userId, 'World')": False,
        "startswith(trim(userId), 'Hello')": True,
        "contains(userId, 'o W')": True,
        "contains(userId, 'ow')": False,
        "concat(trim(userId), '!') eq 'Hello World!'": True,
        "concat('a', concat('b', 'c')) eq 'abc'": True,
        "indexof(userId, 'World') eq 8": True,
        "indexof(userId, 'world') eq -1": True,
        "length(userId) eq 15": True,
        "length('') eq 0": True,
        "length(groups) eq 0": True,
        "startswith(connectionId, 'c-')": True,
        "protocol eq null": True,
    }
    for text, expected in cases.items():
        assert matches(text, user) is expected, text


@pytest.mark.parametrize("function", [
    "tolower(userId)", "toupper(userId)", "trim(userId)", "substring(userId, 1)", "substring(userId, 1, 2)",
    "concat(userId, 'a')", "concat('a', userId)", "indexof(userId, 'a')", "length(userId)",
    "tolower(concat(protocol, userId))", "startswith(userId, 'a')", "endswith(userId, 'a')",
    "contains(userId, 'a')", "length(tolower(null))", "substring('abc', length(userId))",
])
def test_functions_of_null_are_null(function):
    assert matches(f"{function} eq null", NOBODY)
    assert not matches(f"{function} ne null", NOBODY)


def test_null_semantics():
    assert matches("userId eq null", NOBODY) and not matches("userId eq null", ALICE)
    assert matches("userId ne null", ALICE) and not matches("userId ne null", NOBODY)
    assert matches("null eq userId", NOBODY) and matches("null eq null", ALICE)
    assert matches("userId ne 'alice'", NOBODY)
    for op in ("gt", "ge", "lt", "le"):
        assert not matches(f"userId {op} 'a'", NOBODY)
        assert not matches(f"length(userId) {op} 0", NOBODY)
        assert not matches(f"null {op} null", ALICE)
        assert matches(f"not (userId {op} 'a')", NOBODY)  # comparisons are two-valued
    assert not matches("null in groups", ALICE)
    assert not matches("userId in groups", conn(None, "alice"))
    assert matches("userId in ('a', null)", NOBODY) and not matches("userId in ('a', null)", ALICE)
    assert not matches("null", ALICE) and not matches("not startswith(userId, 'x')", NOBODY)
    assert matches("startswith(userId, 'x') eq null", NOBODY)
    assert matches("(startswith(userId, 'x') or true) and true", NOBODY)
    assert not matches("protocol eq 'json.webpubsub.azure.v1'", ALICE)
    assert matches("protocol eq 'json.webpubsub.azure.v1'", conn(protocol="json.webpubsub.azure.v1"))


def test_precedence():
    assert matches("true or true and false", ALICE)  # and binds tighter than or
    assert matches("false and true or true", ALICE)
    assert not matches("(true or true) and false", ALICE)
    assert not matches("not false and false", ALICE)  # not binds tighter than and
    assert matches("not (false and false)", ALICE)
    assert matches("not false eq true", ALICE)  # (not false) eq true
    assert matches("userId eq 'alice' or userId eq 'bob' and 'x' in groups", ALICE)
    assert not matches("(userId eq 'alice' or userId eq 'bob') and 'x' in groups", ALICE)
    assert "'not' needs a boolean operand, got an integer" in error("not length(userId) gt 5")
    assert matches("not (length(userId) gt 5)", ALICE)
    assert "'not' needs a boolean operand, got a string" in error("not 'muted' in groups")


@pytest.mark.parametrize("literal, value", [
    ("'user''1'", "user'1"), ("''''", "'"), ("''", ""), ("'a''''b'", "a''b"), ("'it''s ''quoted'''", "it's 'quoted'"),
    ("'and or not eq ( ) ,'", "and or not eq ( ) ,"), ("'\u4f60\u597d'", "\u4f60\u597d"),
    ("'\"); import os; (\"'", '"); import os; ("'),
])
def test_string_literals_and_escapes(literal, value):
    assert matches(f"userId eq {literal}", conn(value))
    assert matches(f"userId in ('x', {literal})", conn(value))
    assert not matches(f"userId eq {literal}", conn(value + "x"))


def test_integer_literals():
    assert matches("length(userId) eq +5", ALICE) and matches("indexof(userId, 'z') eq -1", ALICE)
    assert matches("9223372036854775807 gt -9223372036854775808", ALICE)
    assert matches("007 eq 7", ALICE)
    assert "integer literal out of range at position 0" in error("9223372036854775808 eq 1")
    assert "integer literal out of range" in error("1 eq -9223372036854775809")
    assert "integer literal out of range" in error("1 eq " + "9" * 5000)


def test_names_are_case_insensitive():
    for text in ["USERID eq 'alice'", "UserId EQ 'alice'", "userid Eq 'alice' AND 'room1' IN GROUPS",
                 "ToLower(UserID) eq 'alice'", "STARTSWITH(userId, 'al')", "NOT (userId eq NULL)",
                 "TRUE", "ConnectionID ne 'x' Or False", "Length(Groups) eq 1"]:
        assert matches(text, ALICE), text


def test_whitespace_and_tight_spacing():
    assert matches("\tuserId\neq\r\n'alice'  ", ALICE)
    assert matches("(userId eq'alice')and('room1'in groups)", ALICE)
    assert matches("startswith(userId,'al')", ALICE)


def test_compiled_filters_are_cached_and_reusable():
    assert compile_filter("userId eq 'alice'") is compile_filter("userId eq 'alice'")
    predicate = compile_filter("'room1' in groups")
    assert [predicate(c) for c in (ALICE, BOB, NOBODY)] == [True, False, True]


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("userId eq", "Invalid syntax for 'userId eq': expected a value at position 9"),
    ("userId eq 'abc", "unterminated string literal at position 10"),
    ("'abc''", "unterminated string literal at position 5"),
    ("foo eq 'a'", "unknown identifier 'foo' at position 0"),
    ("userId eq Alice", "unknown identifier 'Alice' at position 10"),
    ("foo('a') eq 'a'", "unknown function 'foo' at position 0"),
    ("userId('a')", "unknown function 'userId' at position 0"),
    ("substring(userId) eq 'a'", "function 'substring' takes 2 or 3 arguments, got 1"),
    ("substring(userId, 1, 2, 3) eq 'a'", "function 'substring' takes 2 or 3 arguments, got 4"),
    ("tolower() eq 'a'", "function 'tolower' takes 1 argument, got 0"),
    ("startswith(userId) ", "function 'startswith' takes 2 arguments, got 1"),
    ("tolower(1) eq 'a'", "argument 1 of 'tolower' must be a string, got an integer at position 8"),
    ("substring(userId, '1') eq 'a'", "argument 2 of 'substring' must be an integer, got a string"),
    ("length(1) eq 1", "argument 1 of 'length' must be a string or a collection, got an integer"),
    ("tolower(groups) eq 'a'", "must be a string, got a collection"),
    ("concat(userId eq 'a', 'b') eq 'a'", "must be a string, got a boolean"),
    ("tolower eq 'a'", "expected '(' after function 'tolower'"),
    ("not length(userId) gt 5", "'not' needs a boolean operand, got an integer at position 0"),
    ("not userId", "'not' needs a boolean operand, got a string"),
    ("userId", "the filter must be a boolean expression, got a string at position 0"),
    ("length(groups)", "the filter must be a boolean expression, got an integer"),
    ("groups", "the filter must be a boolean expression, got a collection"),
    ("'a'", "must be a boolean expression"),
    ("userId and true", "'and' needs boolean operands, got a string at position 0"),
    ("true or 5", "'or' needs boolean operands, got an integer at position 8"),
    ("groups eq 'a'", "'eq' cannot compare a collection; use 'in' to test membership at position 7"),
    ("groups ne groups", "'ne' cannot compare a collection"),
    ("length(groups) gt groups", "'gt' cannot compare a collection"),
    ("userId eq 1", "'eq' cannot compare a string with an integer at position 7"),
    ("1 lt 'a'", "'lt' cannot compare an integer with a string"),
    ("(userId eq 'a') eq 'a'", "'eq' cannot compare a boolean with a string"),
    ("true gt false", "'gt' cannot order booleans"),
    ("userId in (1, 2)", "'in' cannot compare a string with an integer"),
    ("userId in ('a', 1)", "the values of an 'in' list must all have one type"),
    ("userId in ('a', userId)", "expected a literal value in the 'in' list, found 'userId'"),
    ("userId in ()", "expected a value, found ')'"),
    ("userId in ('a'", "expected ',' or ')' at position 14"),
    ("userId in ('a',)", "expected a literal value in the 'in' list, found ')'"),
    ("userId in 'a'", "'in' needs a parenthesised list of values or a collection, got a string"),
    ("userId in userId", "'in' needs a parenthesised list of values or a collection"),
    ("1 in groups", "'in' groups needs a string on the left, got an integer"),
    ("groups in groups", "'in' groups needs a string on the left, got a collection"),
    ("userId eq 'a' eq 'b'", "expected an operator or end of filter, found 'eq' at position 14"),
    ("userId eq 'a' 'b'", "expected an operator or end of filter, found string 'b' at position 14"),
    ("userId equals 'a'", "expected an operator or end of filter, found 'equals' at position 7"),
    ("(userId eq 'a'", "expected an operator or ')' at position 14"),
    ("userId eq 'a')", "found ')' at position 13"),
    ("()", "expected a value, found ')' at position 1"),
    ("and", "expected a value, found 'and' at position 0"),
    ("userId eq eq 'a'", "expected a value, found 'eq' at position 10"),
    ("not", "expected a value at position 3"),
    ("userId eq 'a' and", "expected a value at position 17"),
    ("tolower(userId", "expected ',' or ')' at position 14"),
    ("tolower(userId,", "expected a value at position 15"),
    ("userId eq \"a\"", "unexpected character '\"' at position 10"),
    ("userId == 'a'", "unexpected character '=' at position 7"),
    ("userId eq 'a' && true", "unexpected character '&' at position 14"),
    ("length(userId) eq 1.5", "unexpected character '.' at position 19"),
    ("userId eq - 1", "unexpected character '-' at position 10"),
    ("userId eq 'a' \x00", "unexpected character '\\x00' at position 14"),
    ("", "Invalid filter: it is empty"),
    (" \t\n", "Invalid filter: it is empty"),
])
def test_malformed_filters(text, message):
    assert message in error(text)


def test_error_carries_position_and_is_a_value_error():
    with pytest.raises(ValueError) as info:
        compile_filter("userId eq")
    assert isinstance(info.value, FilterError) and info.value.position == 9


def test_long_filters_are_shortened_in_messages():
    text = "userId eq '" + "a" * 300 + "' and"
    message = error(text)
    assert len(message) < 250 and message.endswith(f"expected a value at position {len(text)}")


# -- limits ---------------------------------------------------------------------------------------

def test_length_limit():
    ok = "userId eq '" + "a" * (MAX_FILTER_LENGTH - 12) + "'"
    assert len(ok) == MAX_FILTER_LENGTH and not matches(ok, ALICE)
    assert error(ok + " ") == (f"Invalid filter: it is {MAX_FILTER_LENGTH + 1} characters long, "
                               f"the limit is {MAX_FILTER_LENGTH}")


def test_clause_limit():
    clauses = [f"'g{i}' in groups" for i in range(MAX_CLAUSES)]
    assert matches(" or ".join(clauses), conn("x", f"g{MAX_CLAUSES - 1}"))
    assert f"too many clauses (limit {MAX_CLAUSES})" in error(" or ".join([*clauses, "userId eq 'a'"]))
    assert "too many clauses" in error(" and ".join(["startswith(userId, 'a')"] * (MAX_CLAUSES + 1)))
    assert matches(" and ".join(["true"] * 800), ALICE)  # literals are not clauses


def test_depth_limit():
    def nest(depth: int) -> str:
        return "(" * depth + "userId eq 'alice'" + ")" * depth
    assert matches(nest(MAX_DEPTH), ALICE)
    assert f"filter is nested too deeply (limit {MAX_DEPTH}) at position {MAX_DEPTH}" in error(nest(MAX_DEPTH + 1))
    assert "nested too deeply" in error("(" * 5000)
    calls = "tolower(" * MAX_DEPTH + "userId" + ")" * MAX_DEPTH
    assert matches(f"{calls} eq 'alice'", ALICE)
    assert "nested too deeply" in error(f"tolower({calls}) eq 'alice'")


@pytest.mark.parametrize("wrap", [
    lambda x: f"({x} and null) eq null",
    lambda x: f"({x} or null) in (true, null)",
    lambda x: f"not (({x} or null) and (null or true))",
    lambda x: f"startswith(concat(userId, 'x'), 'a') eq (not ({x} or null))",
    lambda x: f"contains(concat(userId, protocol), 'x') eq ({x} or null)",
])
def test_deepest_filters_compile_and_run(wrap):
    text = "startswith(userId, 'a')"
    while True:
        try:
            compile_filter(wrap(text))
        except FilterError as e:
            assert "nested too deeply" in str(e)
            break
        text = wrap(text)
    predicate = compile_filter(text)
    assert {type(predicate(c)) for c in (ALICE, NOBODY, conn(None, protocol="p"))} == {bool}


# -- property tests -------------------------------------------------------------------------------
# Random well-typed expression trees, rendered to text with random case and spare parentheses, must
# evaluate like this straightforward reference evaluator.

OR, AND, CMP, NOT, ATOM = range(1, 6)
STRING_LITERALS = ["", "a", "alice", "Bob", "o'neil", "room1", " x ", "bo", "-", "AL", "''"]
connections = st.builds(
    Conn,
    connection_id=st.sampled_from(["c-1", "c-123", "AL"]),
    user_id=st.sampled_from([None, "alice", "bob", "Bob", "o'neil", " x ", "listener-1", "", "room1"]),
    groups=st.frozensets(st.sampled_from(["room1", "room2", "muted", "a", "alice", ""])),
    protocol=st.sampled_from([None, "json.webpubsub.azure.v1", "a"]),
)


def literal(value):
    return ("lit", value)


@cache
def strings(depth: int):
    base = st.one_of(st.sampled_from(STRING_LITERALS).map(literal), st.just(literal(None)),
                     st.sampled_from(["userId", "connectionId", "protocol"]).map(lambda n: ("id", n)))
    if depth == 0:
        return base
    sub, ints = strings(depth - 1), integers(depth - 1)
    return st.one_of(
        base,
        st.tuples(st.just("fn"), st.sampled_from(["tolower", "toupper", "trim"]), st.tuples(sub)),
        st.tuples(st.just("fn"), st.just("concat"), st.tuples(sub, sub)),
        st.tuples(st.just("fn"), st.just("substring"), st.tuples(sub, ints) | st.tuples(sub, ints, ints)),
    )


@cache
def integers(depth: int):
    base = st.one_of(st.integers(-3, 6).map(literal), st.just(literal(None)),
                     st.just(("fn", "length", (("id", "groups"),))))
    if depth == 0:
        return base
    sub = strings(depth - 1)
    return st.one_of(base, st.tuples(st.just("fn"), st.just("length"), st.tuples(sub)),
                     st.tuples(st.just("fn"), st.just("indexof"), st.tuples(sub, sub)))


@cache
def booleans(depth: int):
    text, ints = strings(min(depth, 2)), integers(min(depth, 2))
    ops = st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"])
    leaves = st.one_of(
        st.sampled_from([True, False, None]).map(literal),
        st.tuples(st.just("cmp"), ops, text, text),
        st.tuples(st.just("cmp"), ops, ints, ints),
        st.tuples(st.just("fn"), st.sampled_from(["startswith", "endswith", "contains"]), st.tuples(text, text)),
        st.tuples(st.just("in_list"), text,
                  st.lists(st.sampled_from([*STRING_LITERALS, None]), min_size=1, max_size=3)),
        st.tuples(st.just("in_list"), ints, st.lists(st.integers(-1, 4), min_size=1, max_size=3)),
        st.tuples(st.just("in_groups"), text),
    )
    if depth == 0:
        return leaves
    sub = booleans(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(st.just("not"), sub),
        st.tuples(st.sampled_from(["and", "or"]), sub, sub),
        st.tuples(st.just("cmp"), st.sampled_from(["eq", "ne"]), sub, sub),
        st.tuples(st.just("in_list"), sub, st.lists(st.sampled_from([True, False, None]), min_size=1, max_size=2)),
    )


def reference(node, c: Conn):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "id":
        return {"userId": c.user_id, "connectionId": c.connection_id, "protocol": c.protocol,
                "groups": c.groups}[node[1]]
    if kind == "fn":
        name, args = node[1], [reference(a, c) for a in node[2]]
        if None in args:
            return None
        if name == "substring":
            start = max(args[1], 0)
            return args[0][start:] if len(args) == 2 else args[0][start:start + max(args[2], 0)]
        return {
            "tolower": lambda s: s.lower(), "toupper": lambda s: s.upper(), "trim": lambda s: s.strip(),
            "concat": lambda a, b: a + b, "length": len, "indexof": lambda a, b: a.find(b),
            "startswith": lambda a, b: a.startswith(b), "endswith": lambda a, b: a.endswith(b),
            "contains": lambda a, b: b in a,
        }[name](*args)
    if kind == "cmp":
        op, a, b = node[1], reference(node[2], c), reference(node[3], c)
        if op == "eq":
            return a == b
        if op == "ne":
            return a != b
        if a is None or b is None:
            return False
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    if kind == "in_list":
        value = reference(node[1], c)
        return any(value == v and type(value) is type(v) for v in node[2])
    if kind == "in_groups":
        return reference(node[1], c) in c.groups
    if kind == "not":
        value = reference(node[1], c)
        return None if value is None else not value
    a, b = reference(node[1], c), reference(node[2], c)
    if kind == "and":
        return False if False in (a, b) else None if None in (a, b) else True
    return True if True in (a, b) else None if None in (a, b) else False


def render(node, rng: random.Random) -> tuple[str, int]:
    """Filter text for `node` and its precedence level, with only the parentheses it needs (and some spare)."""
    def wrap(child, level: int) -> str:
        text, child_level = render(child, rng)
        return f"({text})" if child_level < level or rng.random() < 0.1 else text

    def name(word: str) -> str:
        return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in word)

    def lit(value) -> str:
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        if isinstance(value, bool) or value is None:
            return name({True: "true", False: "false", None: "null"}[value])
        return f"+{value}" if value >= 0 and rng.random() < 0.2 else str(value)

    kind = node[0]
    if kind == "lit":
        return lit(node[1]), ATOM
    if kind == "id":
        return name(node[1]), ATOM
    if kind == "fn":
        return f"{name(node[1])}({', '.join(render(a, rng)[0] for a in node[2])})", ATOM
    if kind == "cmp":
        return f"{wrap(node[2], NOT)} {name(node[1])} {wrap(node[3], NOT)}", CMP
    if kind == "in_list":
        return f"{wrap(node[1], NOT)} {name('in')} ({', '.join(lit(v) for v in node[2])})", CMP
    if kind == "in_groups":
        return f"{wrap(node[1], NOT)} {name('in')} {name('groups')}", CMP
    if kind == "not":
        return f"{name('not')} {wrap(node[1], NOT)}", NOT
    level = AND if kind == "and" else OR
    return f"{wrap(node[1], level)} {name(kind)} {wrap(node[2], level)}", level


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=booleans(3), people=st.lists(connections, min_size=1, max_size=4), rng=st.randoms(use_true_random=False))
def test_matches_reference_evaluator(tree, people, rng):
    text, _ = render(tree, rng)
    predicate = compile_filter(text)
    for c in people:
        assert predicate(c) is (reference(tree, c) is True), (text, c)


def check_fuzz(text: str) -> None:
    try:
        predicate = compile_filter(text)
    except FilterError as e:
        assert str(e).startswith("Invalid ")
        return
    for c in (ALICE, NOBODY, conn("", protocol="p")):
        assert type(predicate(c)) is bool


FILTER_CHARACTERS = st.sampled_from("userIdgrops()',  eqntlai0123-+\"tolwrsbgh\t\u00e9")


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=FILTER_CHARACTERS | st.characters(), max_size=60))
def test_arbitrary_text_compiles_or_raises_filter_error(text):
    check_fuzz(text)


TOKENS = ["userId", "connectionId", "groups", "protocol", "eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not",
          "in", "(", ")", ",", "'a'", "'it''s'", "''", "'", "0", "-2", "+7", "null", "true", "false", "tolower",
          "trim", "substring", "length", "concat", "indexof", "startswith", "contains", "foo", "99999999999999999999"]


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14), st.sampled_from([" ", ""]))
def test_token_soup_compiles_or_raises_filter_error(tokens, separator):
    check_fuzz(separator.join(tokens))
