"""Who may send to, or join and leave, which group: the roles a client holds, literal ones and the
service's wildcard group roles.

Roles, as the service names them:

    webpubsub.sendToGroup                 send to any group
    webpubsub.sendToGroup.<group>         send to that group
    webpubsub.sendToGroups.<pattern>      send to every group the pattern matches
    webpubsub.joinLeaveGroup[.<group>]    join and leave (any group, that group)
    webpubsub.joinLeaveGroups.<pattern>   join and leave every group the pattern matches

A pattern sees `.` as the separator of a group name's segments: `?` is one character other than
`.`, `*` any run of characters without a `.`, `**` any run with or without; `\\` makes the next
`\\`, `*` or `?` literal; everything else stands for itself, case-sensitively. A pattern may hold
at most five `*` characters (`**` counts two). So `prices.*` matches `prices.msft` but neither
`prices` nor `prices.us.msft`; `prices.**` matches `prices.msft`, `prices.us.msft` and `prices.`,
not `prices`.
"""
from __future__ import annotations

import functools
from collections.abc import Collection, Iterable

__all__ = ["Permission", "RoleError", "grants", "with_role", "without_role", "check_roles", "compile_group_pattern",
           "MAX_PATTERN_STARS"]

MAX_PATTERN_STARS = 5


class Permission:
    """The two grantable permissions, by their REST names, and the role strings they stand for."""

    SEND_TO_GROUP = "sendToGroup"
    JOIN_LEAVE_GROUP = "joinLeaveGroup"
    ALL = (SEND_TO_GROUP, JOIN_LEAVE_GROUP)

    @staticmethod
    def role(permission: str, target: str | None = None) -> str:
        return f"webpubsub.{permission}" + (f".{target}" if target else "")


# The wildcard role of each permission: the plural of its name.
_PATTERN_PREFIXES = {permission: f"webpubsub.{permission}s." for permission in Permission.ALL}


class RoleError(ValueError):
    """A wildcard group role whose pattern cannot be used."""


def grants(roles: Collection[str], permission: str, group: str | None) -> bool:
    """Whether `roles` give `permission` for `group` (None: for every group)."""
    if Permission.role(permission) in roles:
        return True
    if group is None:
        return False
    if Permission.role(permission, group) in roles:
        return True
    prefix = _PATTERN_PREFIXES[permission]
    for role in roles:
        if role.startswith(prefix):
            pattern = _compiled(role[len(prefix):])
            if pattern is not None and pattern.fullmatch(group):
                return True
    return False


def with_role(roles: Collection[str], permission: str, target: str | None) -> set[str]:
    """`roles` plus the role granting `permission` for `target` (None: every group)."""
    return {*roles, Permission.role(permission, target)}


def without_role(roles: Collection[str], permission: str, target: str | None) -> set[str]:
    """`roles` less `permission` for `target`; with no target, less the role for every group and
    each per-group one (wildcard roles, `webpubsub.sendToGroups.<pattern>`, stay)."""
    if target:
        return set(roles) - {Permission.role(permission, target)}
    general = Permission.role(permission)
    return {r for r in roles if r != general and not r.startswith(general + ".")}


def check_roles(roles: Iterable[str]) -> None:
    """Raise RoleError for the first wildcard group role that cannot be compiled."""
    for role in roles:
        for prefix in _PATTERN_PREFIXES.values():
            if role.startswith(prefix):
                compile_group_pattern(role[len(prefix):])


class GroupPattern:
    """A compiled wildcard group pattern, matched as a small NFA over bit sets: time linear in the
    group name's length whatever the pattern. (A backtracking regular expression is not: `*a*a*a*a*a`
    against 1,024 `a`s and a `b` would hold the event loop for minutes, with a group name any client
    may choose.)"""

    __slots__ = ("_literals", "_one", "_star", "_any", "_accept")

    def __init__(self, tokens: list[tuple[str, str]]):
        self._literals: dict[str, int] = {}  # character -> the positions that expect it
        self._one = self._star = self._any = 0  # positions of `?`, `*` and `**`
        for position, (kind, char) in enumerate(tokens):
            bit = 1 << position
            if kind == "?":
                self._one |= bit
            elif kind == "*":
                self._star |= bit
            elif kind == "**":
                self._any |= bit
            else:
                self._literals[char] = self._literals.get(char, 0) | bit
        self._accept = 1 << len(tokens)

    def _skip_stars(self, states: int) -> int:
        """A star may match nothing: from its position, the next one is reached as well."""
        stars = self._star | self._any
        while True:
            more = states | ((states & stars) << 1)
            if more == states:
                return states
            states = more

    def fullmatch(self, group: str) -> bool:
        states = self._skip_stars(1)
        for char in group:
            if char == ".":  # only a literal `.` or `**` consume the separator
                moved = ((states & self._literals.get(".", 0)) << 1) | (states & self._any)
            else:
                moved = (((states & (self._literals.get(char, 0) | self._one)) << 1)
                         | (states & (self._star | self._any)))
            if not moved:
                return False
            states = self._skip_stars(moved)
        return bool(states & self._accept)


def compile_group_pattern(pattern: str) -> GroupPattern:
    """The matcher a wildcard group pattern stands for (see the module docstring)."""
    if not pattern:
        raise RoleError("a wildcard group role needs a pattern after its prefix")
    tokens: list[tuple[str, str]] = []  # (kind, character): kind "" for a literal, else "?", "*" or "**"
    stars = i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 == len(pattern) or pattern[i + 1] not in "\\*?":
                raise RoleError(f"in the pattern {pattern[:100]!r}, '\\' must be followed by '\\', '*' or '?'")
            tokens.append(("", pattern[i + 1]))
            i += 2
        elif pattern.startswith("**", i):
            tokens.append(("**", ""))
            stars += 2
            i += 2
        elif char in "*?":
            tokens.append((char, ""))
            stars += char == "*"
            i += 1
        else:
            tokens.append(("", char))
            i += 1
    if stars > MAX_PATTERN_STARS:
        raise RoleError(f"the pattern {pattern[:100]!r} holds more than {MAX_PATTERN_STARS} '*' characters")
    return GroupPattern(tokens)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> GroupPattern | None:
    """Compiled once per distinct pattern in the process, not per message or per connection."""
    try:
        return compile_group_pattern(pattern)
    except RoleError:
        return None
