"""Azure Web PubSub OData `filter` expressions, compiled once into a per-connection predicate.

A filter arrives with a REST send or :addToGroups/:removeFromGroups call and is then tested
against every candidate connection, so `compile_filter` does all parsing and type checking up
front (a bad filter is a 400 before any connection is touched) and returns one plain Python
lambda for the hot path.

The language (Azure's reference-odata-filter), with the choices made here:

* Identifiers `userId`, `connectionId`, `protocol` (strings; userId and protocol may be null)
  and `groups` (a collection of strings).
* Literals: `'text'` (`''` is a quote), 64-bit integers with an optional sign, `true`,
  `false`, `null`.
* Precedence: `not` > `eq ne gt ge lt le in` > `and` > `or`; parentheses group.
  Comparisons do not chain: `a eq b eq c` is rejected.
* Functions: tolower, toupper, trim, substring(s, i[, n]), startswith, endswith, contains,
  concat, indexof (-1 when absent), length (of a string or of groups).
* Every name -- identifier, function *and* keyword -- is case-insensitive. Azure documents
  only lowercase keywords; accepting `EQ` as well means every filter Azure takes works here.
* Strings compare by code point (ordinal). substring treats a negative start or length as 0
  instead of failing per connection.
* Null: a function of null is null; `eq`/`ne` treat null as a value (`userId eq null`); the
  other comparisons are false when a side is null; `and`/`or`/`not` are three-valued and a
  null result does not match. `x in ('a', 'b')` means `x eq 'a' or x eq 'b'`;
  `'g' in groups` is membership, false for null.
* Limits: MAX_FILTER_LENGTH characters, MAX_CLAUSES comparisons (`in` and boolean functions
  included), MAX_DEPTH nested parentheses or calls.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

__all__ = ["FilterError", "ConnectionFacts", "compile_filter"]

MAX_FILTER_LENGTH = 8192
MAX_CLAUSES = 100
MAX_DEPTH = 32  # each level may add a few Python nesting levels; CPython's parser stops near 200


class FilterError(ValueError):
    """A filter that is syntactically or type-wise invalid; str(e) is fit for a 400 response."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class ConnectionFacts(Protocol):
    """What a filter can see of a connection."""

    @property
    def connection_id(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def groups(self) -> Collection[str]: ...
    @property
    def protocol(self) -> str | None:
        """The subprotocol, None for raw WebSocket clients."""


@lru_cache(maxsize=256)
def compile_filter(text: str) -> Callable[[ConnectionFacts], bool]:
    """Parse and type-check `text`, returning a predicate that is True for matching connections.

    Raises FilterError for anything invalid, including an empty filter (absent is the
    caller's business). Cached, since clients tend to resend the same few filters.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"Invalid filter: it is {len(text)} characters long, "
                          f"the limit is {MAX_FILTER_LENGTH}")
    if not text.strip():
        raise FilterError("Invalid filter: it is empty")
    parser = _Parser(text)
    return _build(parser.parse().true, parser.constants)


def _build(source: str,
           constants: dict[tuple[type, object], str]) -> Callable[[ConnectionFacts], bool]:
    """Turn the predicate's Python source into a function.

    The source is assembled only from this module's fixed fragments, the names `c`, `k<n>`
    and the `_HELPERS`; literals from the filter reach it solely as arguments bound to the
    `k<n>` parameters, so user text is never executed.
    """
    code = f"def make({', '.join(constants.values())}):\n    return lambda c: {source}\n"
    namespace: dict[str, Any] = dict(_HELPERS)
    exec(compile(code, "<odata filter>", "exec"), namespace)
    make: Callable[..., Callable[[ConnectionFacts], bool]] = namespace["make"]  # defined by `code`
    return make(*(value for _, value in constants))


# Run-time helpers the generated source may call; booleans there are three-valued (None is null).

def _substring(text: str, start: int, length: int | None = None) -> str:
    start = max(start, 0)
    return text[start:] if length is None else text[start:start + max(length, 0)]


def _not3(value: bool | None) -> bool | None:
    return None if value is None else not value


def _and3(*values: bool | None) -> bool | None:
    return False if False in values else None if None in values else True


def _or3(*values: bool | None) -> bool | None:
    return True if True in values else None if None in values else False


_HELPERS = {"_substring": _substring, "_not3": _not3, "_and3": _and3, "_or3": _or3}


# ---------------------------------------------------------------------------------------------
# Typed operands. Every `src` below is a Python atom or primary (a name, a call, or a
# parenthesised expression) so that sources compose without precedence surprises.

@dataclass(frozen=True, slots=True)
class _Value:
    """A non-boolean (or boolean-as-value) operand.

    `src` is only valid while no source in `guard` is None; if one is, the value is null. That
    lets null pass through nested functions with a single check where the value is used.
    `null` marks a value that is null for every connection (the literal, or a function of it).
    """

    type: str  # "string" | "integer" | "boolean" | "collection" | "null"
    src: str = "None"
    guard: tuple[str, ...] = ()
    null: bool = False


@dataclass(frozen=True, slots=True)
class _Bool:
    """A condition as sources that are True exactly when it is true, and when it is false.

    Carrying both makes `not` a swap and turns three-valued logic into plain short-circuit
    `and`/`or`: a null condition is simply neither. `value` (True, False or None) is only
    needed when the condition is itself compared; it is built alongside rather than from
    `true` and `false`, which would double the source at every level.
    """

    true: str
    false: str
    value: str

    @property
    def nullable(self) -> bool:
        return self.value != self.true


_NULL = _Value("null", null=True)
_NULL_BOOL = _Bool("False", "False", "None")
_ARTICLE = {"string": "a string", "integer": "an integer", "boolean": "a boolean",
            "collection": "a collection", "null": "null"}


def _two_valued(true: str) -> _Bool:
    return _Bool(true, f"(not {true})", true)


def _negate(condition: _Bool) -> _Bool:
    value = f"_not3({condition.value})" if condition.nullable else condition.false
    return _Bool(condition.false, condition.true, value)


def _merge(*guards: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g for guard in guards for g in guard))


def _is_null(value: _Value) -> str:
    if value.null:
        return "True"
    if not value.guard:
        return "False"
    return "(" + " or ".join(f"{g} is None" for g in value.guard) + ")"


def _nullable_src(value: _Value) -> str:
    """Source evaluating to the value, or None when it is null."""
    if value.null or value.guard in ((), (value.src,)):
        return value.src
    return f"(None if {_is_null(value)} else {value.src})"


def _as_value(operand: _Value | _Bool) -> _Value:
    if isinstance(operand, _Value):
        return operand
    if not operand.nullable:
        return _Value("boolean", operand.true)
    return _Value("boolean", operand.value, (operand.value,))


class _Function(NamedTuple):
    params: tuple[tuple[str, ...], ...]  # the accepted types of each parameter
    result: str
    template: str  # Python source; {0}, {1}, ... are the argument sources


_S = ("string",)
_I = ("integer",)
_FUNCTIONS: dict[str, tuple[_Function, ...]] = {
    "tolower": (_Function((_S,), "string", "{0}.lower()"),),
    "toupper": (_Function((_S,), "string", "{0}.upper()"),),
    "trim": (_Function((_S,), "string", "{0}.strip()"),),
    "substring": (_Function((_S, _I), "string", "_substring({0}, {1})"),
                  _Function((_S, _I, _I), "string", "_substring({0}, {1}, {2})")),
    "startswith": (_Function((_S, _S), "boolean", "{0}.startswith({1})"),),
    "endswith": (_Function((_S, _S), "boolean", "{0}.endswith({1})"),),
    "contains": (_Function((_S, _S), "boolean", "({1} in {0})"),),
    "concat": (_Function((_S, _S), "string", "({0} + {1})"),),
    "indexof": (_Function((_S, _S), "integer", "{0}.find({1})"),),
    "length": (_Function((("string", "collection"),), "integer", "len({0})"),),
}
_IDENTIFIERS = {  # lowercase name -> (type, source, may be null)
    "userid": ("string", "c.user_id", True),
    "connectionid": ("string", "c.connection_id", False),
    "protocol": ("string", "c.protocol", True),
    "groups": ("collection", "c.groups", False),
}
_ORDERINGS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_COMPARISONS = {"eq", "ne", *_ORDERINGS}
_KEYWORDS = {"and", "or", "not", "in", *_COMPARISONS}
_LITERALS = {"true": (True, "boolean"), "false": (False, "boolean"), "null": (None, "null")}
_INT64 = range(-2**63, 2**63)


# ---------------------------------------------------------------------------------------------
# Tokens and parser.

class _Token(NamedTuple):
    kind: str  # "string" | "integer" | "name" | "(" | ")" | "," | "end"
    value: object  # the decoded literal, or the name as written
    start: int
    end: int

    @property
    def word(self) -> str:
        """The lowercased name ("" for other tokens), since every name is case-insensitive."""
        return str(self.value).lower() if self.kind == "name" else ""


_STRING = re.compile(r"'((?:[^']|'')*)'")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Parser:
    """Recursive descent over the token list, producing typed Python sources directly."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = self._tokenize()
        self._index = 0
        self._depth = 0
        self._clauses = 0
        self.constants: dict[tuple[type, object], str] = {}  # (type, literal) -> parameter name

    def parse(self) -> _Bool:
        expr = self._logical("or")
        token = self._peek()
        if token.kind != "end":
            raise self._unexpected(token, "an operator or end of filter")
        return self._as_bool(expr, "the filter must be a boolean expression", 0)

    # -- errors

    def _error(self, detail: str, position: int) -> FilterError:
        text = self._text if len(self._text) <= 100 else self._text[:100] + "..."
        message = f"Invalid syntax for '{text}': {detail} at position {position}"
        return FilterError(message, position)

    def _unexpected(self, token: _Token, expected: str) -> FilterError:
        if token.kind == "end":
            return self._error(f"expected {expected}", token.start)
        raw = self._text[token.start:token.end]
        found = f"string {raw}" if token.kind == "string" else f"'{raw}'"
        return self._error(f"expected {expected}, found {found}", token.start)

    # -- tokens

    def _tokenize(self) -> list[_Token]:
        text, tokens, pos = self._text, [], 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                tokens.append(_Token("end", None, pos, pos))
                return tokens
            char = text[pos]
            if char == "'":
                if not (m := _STRING.match(text, pos)):
                    raise self._error("unterminated string literal", pos)
                tokens.append(_Token("string", m[1].replace("''", "'"), pos, m.end()))
            elif m := _INTEGER.match(text, pos):
                digits = m[0].lstrip("+-").lstrip("0")
                if len(digits) > 19 or int(m[0]) not in _INT64:
                    raise self._error("integer literal out of range", pos)
                tokens.append(_Token("integer", int(m[0]), pos, m.end()))
            elif m := _NAME.match(text, pos):
                tokens.append(_Token("name", m[0], pos, m.end()))
            elif char in "(),":
                tokens.append(_Token(char, None, pos, pos + 1))
                pos += 1
                continue
            else:
                raise self._error(f"unexpected character {char!r}", pos)
            pos = m.end()

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self._index += token.kind != "end"
        return token

    def _keyword(self) -> str:
        word = self._peek().word
        return word if word in _KEYWORDS else ""

    def _expect(self, kind: str, expected: str) -> None:
        if self._peek().kind != kind:
            raise self._unexpected(self._peek(), expected)
        self._index += 1

    def _enter(self, position: int) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._error(f"filter is nested too deeply (limit {MAX_DEPTH})", position)

    def _clause(self, position: int) -> None:
        self._clauses += 1
        if self._clauses > MAX_CLAUSES:
            raise self._error(f"too many clauses (limit {MAX_CLAUSES})", position)

    def _const(self, value: object) -> str:
        return self.constants.setdefault((type(value), value), f"k{len(self.constants)}")

    def _as_bool(self, operand: _Value | _Bool, problem: str, position: int) -> _Bool:
        if isinstance(operand, _Bool):
            return operand
        if operand.type not in ("boolean", "null"):
            raise self._error(f"{problem}, got {_ARTICLE[operand.type]}", position)
        if operand.null:
            return _NULL_BOOL
        if not operand.guard:
            return _two_valued(operand.src)
        ok = " and ".join(f"{g} is not None" for g in operand.guard)
        return _Bool(f"({ok} and {operand.src})", f"({ok} and not {operand.src})",
                     _nullable_src(operand))

    # -- grammar: or > and > comparison/in > not > primary

    def _logical(self, word: str) -> _Value | _Bool:
        """`or` chains of `and` chains of comparisons, flattened so long chains stay shallow."""
        operand = self._comparison if word == "and" else lambda: self._logical("and")
        position = self._peek().start
        first = operand()
        if self._keyword() != word:
            return first
        parts = [self._as_bool(first, f"'{word}' needs boolean operands", position)]
        while self._keyword() == word:
            self._index += 1
            position = self._peek().start
            parts.append(self._as_bool(operand(), f"'{word}' needs boolean operands", position))
        true = "(" + f" {word} ".join(p.true for p in parts) + ")"
        false = "(" + (" or " if word == "and" else " and ").join(p.false for p in parts) + ")"
        if not any(p.nullable for p in parts):
            return _Bool(true, false, true)
        return _Bool(true, false, f"_{word}3({', '.join(p.value for p in parts)})")

    def _comparison(self) -> _Value | _Bool:
        left = self._unary()
        word, position = self._keyword(), self._peek().start
        if word in _COMPARISONS:
            self._index += 1
            self._clause(position)
            return self._compare(word, _as_value(left), _as_value(self._unary()), position)
        if word == "in":
            self._index += 1
            self._clause(position)
            return self._in(_as_value(left), position)
        return left

    def _unary(self) -> _Value | _Bool:
        nots = []
        while self._keyword() == "not":
            nots.append(self._next().start)
        operand = self._primary()
        if not nots:
            return operand
        condition = self._as_bool(operand, "'not' needs a boolean operand", nots[-1])
        return _negate(condition) if len(nots) % 2 else condition  # `not not x` is x, even for null

    def _primary(self) -> _Value | _Bool:
        token = self._next()
        if token.kind == "string":
            return _Value("string", self._const(token.value))
        if token.kind == "integer":
            return _Value("integer", self._const(token.value))
        if token.kind == "(":
            self._enter(token.start)
            expr = self._logical("or")
            self._expect(")", "an operator or ')'")
            self._depth -= 1
            return expr
        if token.kind != "name":
            raise self._unexpected(token, "a value")
        name = token.word
        if name == "null":
            return _NULL
        if name in _LITERALS:
            return _Value("boolean", "True" if name == "true" else "False")
        if name in _KEYWORDS:
            raise self._unexpected(token, "a value")
        if self._peek().kind == "(":
            return self._call(token, name)
        if name in _IDENTIFIERS:
            type_, src, nullable = _IDENTIFIERS[name]
            return _Value(type_, src, (src,) if nullable else ())
        if name in _FUNCTIONS:
            raise self._error(f"expected '(' after function '{name}'", token.end)
        raise self._error(f"unknown identifier '{token.value}'", token.start)

    def _call(self, token: _Token, name: str) -> _Value:
        overloads = _FUNCTIONS.get(name)
        if overloads is None:
            raise self._error(f"unknown function '{token.value}'", token.start)
        self._enter(token.start)
        self._index += 1  # the "("
        args: list[tuple[int, _Value]] = []
        if self._peek().kind == ")":
            self._index += 1
        else:
            while True:
                position = self._peek().start
                args.append((position, _as_value(self._logical("or"))))
                if self._peek().kind != ",":
                    self._expect(")", "',' or ')'")
                    break
                self._index += 1
        self._depth -= 1
        function = next((f for f in overloads if len(f.params) == len(args)), None)
        if function is None:
            counts = " or ".join(str(len(f.params)) for f in overloads)
            plural = "" if counts == "1" else "s"
            raise self._error(f"function '{name}' takes {counts} argument{plural}, got {len(args)}",
                              token.start)
        checks = zip(args, function.params, strict=True)
        for number, ((position, arg), accepted) in enumerate(checks, 1):
            if arg.type not in accepted and arg.type != "null":
                wanted = " or ".join(_ARTICLE[t] for t in accepted)
                raise self._error(f"argument {number} of '{name}' must be {wanted}, "
                                  f"got {_ARTICLE[arg.type]}", position)
        if function.result == "boolean":
            self._clause(token.start)
        values = [arg for _, arg in args]
        if any(v.null for v in values):
            return _Value(function.result, null=True)
        return _Value(function.result, function.template.format(*(v.src for v in values)),
                      _merge(*(v.guard for v in values)))

    def _check_comparable(self, op: str, left: str, right: str, position: int) -> None:
        if "collection" in (left, right):
            hint = "; use 'in' to test membership" if op in ("eq", "ne") else ""
            raise self._error(f"'{op}' cannot compare a collection{hint}", position)
        if "null" in (left, right):
            return
        if left != right:
            raise self._error(f"'{op}' cannot compare {_ARTICLE[left]} with {_ARTICLE[right]}",
                              position)
        if left == "boolean" and op in _ORDERINGS:
            raise self._error(f"'{op}' cannot order booleans", position)

    def _compare(self, op: str, left: _Value, right: _Value, position: int) -> _Bool:
        self._check_comparable(op, left.type, right.type, position)
        if op in ("eq", "ne"):
            if left.null or right.null:
                equal = _is_null(right if left.null else left)
            else:
                equal = f"({_nullable_src(left)} == {_nullable_src(right)})"
            return _two_valued(equal) if op == "eq" else _negate(_two_valued(equal))
        if left.null or right.null:
            return _two_valued("False")
        test = f"{left.src} {_ORDERINGS[op]} {right.src}"
        guard = _merge(left.guard, right.guard)
        if guard:
            test = " and ".join(f"{g} is not None" for g in guard) + " and " + test
        return _two_valued(f"({test})")

    def _in(self, left: _Value, position: int) -> _Bool:
        if self._peek().kind == "(" and (self._peek(1).kind in ("string", "integer")
                                         or self._peek(1).word in _LITERALS):
            values, types = self._literal_list()
            if len(types - {"null"}) > 1:
                raise self._error("the values of an 'in' list must all have one type", position)
            for type_ in types:
                self._check_comparable("in", left.type, type_, position)
            return _two_valued(f"({_nullable_src(left)} in {self._const(frozenset(values))})")
        right_position = self._peek().start
        right = _as_value(self._unary())
        if right.type != "collection":
            raise self._error("'in' needs a parenthesised list of values or a collection, "
                              f"got {_ARTICLE[right.type]}", right_position)
        if left.type not in ("string", "null"):
            raise self._error(f"'in' groups needs a string on the left, got {_ARTICLE[left.type]}",
                              position)
        return _two_valued(f"({_nullable_src(left)} in {right.src})")

    def _literal_list(self) -> tuple[list[object], set[str]]:
        self._index += 1  # the "("
        values: list[object] = []
        types: set[str] = set()
        while True:
            token = self._next()
            if token.kind in ("string", "integer"):
                values.append(token.value)
                types.add(token.kind)
            elif token.word in _LITERALS:
                value, type_ = _LITERALS[token.word]
                values.append(value)
                types.add(type_)
            else:
                raise self._unexpected(token, "a literal value in the 'in' list")
            if self._peek().kind != ",":
                self._expect(")", "',' or ')'")
                return values, types
            self._index += 1
