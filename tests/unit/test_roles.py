"""Literal roles: what `grants` reads from them, and the roles `with_role` and `without_role` leave
(the grant and revoke operations). Wildcard group patterns are tested in test_permissions.py."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpush.permissions import Permission, grants, with_role, without_role

SEND, JOIN = Permission.SEND_TO_GROUP, Permission.JOIN_LEAVE_GROUP
ANY = None  # the group argument meaning "every group"


def test_role_names():
    assert Permission.role(SEND) == "webpubsub.sendToGroup"
    assert Permission.role(JOIN, "g") == "webpubsub.joinLeaveGroup.g"


@pytest.mark.parametrize("roles,permission,group,expected", [
    ((), SEND, "g", False),
    ((), SEND, ANY, False),
    (("webpubsub.sendToGroup",), SEND, "g", True),  # every group ...
    (("webpubsub.sendToGroup",), SEND, ANY, True),
    (("webpubsub.sendToGroup",), JOIN, "g", False),  # ... for that permission only
    (("webpubsub.joinLeaveGroup",), JOIN, "g", True),
    (("webpubsub.sendToGroup.g",), SEND, "g", True),  # one group ...
    (("webpubsub.sendToGroup.g",), SEND, "h", False),
    (("webpubsub.sendToGroup.g",), SEND, ANY, False),  # ... is not every group
    (("webpubsub.sendToGroup.g",), SEND, "G", False),  # group names are case-sensitive
    (("webpubsub.sendToGroup.g",), JOIN, "g", False),
    (("webpubsub.sendToGroup.a.b",), SEND, "a.b", True),  # a dotted name is one group
    (("webpubsub.sendToGroup.a.b",), SEND, "a", False),
    (("webpubsub.sendToGroup.g", "webpubsub.joinLeaveGroup.h"), JOIN, "h", True),
    (("webpubsub.sendToGroups",), SEND, "g", False),  # a wildcard prefix without a pattern
    (("webpubsub.SendToGroup",), SEND, "g", False),  # role names are case-sensitive
    (("admin",), SEND, "g", False),
])
def test_grants(roles, permission, group, expected):
    assert grants(frozenset(roles), permission, group) is expected


def test_with_role_adds_the_role_for_the_group_or_for_every_group():
    roles = frozenset({"webpubsub.joinLeaveGroup"})
    assert with_role(roles, SEND, "g") == {"webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g"}
    assert with_role(roles, SEND, ANY) == {"webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"}
    assert with_role(roles, JOIN, ANY) == roles  # already there
    assert roles == {"webpubsub.joinLeaveGroup"}  # a new set each time


def test_without_role_for_a_group_takes_that_role_only():
    roles = {"webpubsub.sendToGroup.g", "webpubsub.sendToGroup.h", "webpubsub.joinLeaveGroup.g"}
    assert without_role(roles, SEND, "g") == {"webpubsub.sendToGroup.h", "webpubsub.joinLeaveGroup.g"}
    assert without_role(roles, SEND, "other") == roles
    assert len(roles) == 3  # a new set
    # A grant for every group is another role: revoking one group leaves it, and so the permission.
    general = {"webpubsub.sendToGroup"}
    assert without_role(general, SEND, "g") == general and grants(general, SEND, "g")


def test_without_role_for_every_group_takes_each_group_s_role_too_but_not_wildcard_ones():
    roles = {"webpubsub.sendToGroup", "webpubsub.sendToGroup.g", "webpubsub.sendToGroup.a.b",
             "webpubsub.sendToGroups.news.*", "webpubsub.joinLeaveGroup", "webpubsub.joinLeaveGroup.g", "admin"}
    assert without_role(roles, SEND, ANY) == {"webpubsub.sendToGroups.news.*", "webpubsub.joinLeaveGroup",
                                              "webpubsub.joinLeaveGroup.g", "admin"}
    assert without_role(roles, JOIN, ANY) == {"webpubsub.sendToGroup", "webpubsub.sendToGroup.g",
                                              "webpubsub.sendToGroup.a.b", "webpubsub.sendToGroups.news.*",
                                              "admin"}


LITERAL_ROLES = st.frozensets(st.sampled_from([
    "webpubsub.sendToGroup", "webpubsub.sendToGroup.g", "webpubsub.sendToGroup.h",
    "webpubsub.joinLeaveGroup", "webpubsub.joinLeaveGroup.g", "admin"]))
PERMISSIONS = st.sampled_from(Permission.ALL)
GROUPS = st.sampled_from(["g", "h", None])


@given(LITERAL_ROLES, PERMISSIONS, GROUPS, GROUPS)
def test_a_grant_gives_what_it_names_and_a_revoke_for_every_group_takes_it_all(roles, permission, target, group):
    granted = with_role(roles, permission, target)
    assert grants(granted, permission, target)
    if target is None:
        assert grants(granted, permission, group)  # every group
    assert not grants(without_role(granted, permission, None), permission, group)
    other = next(p for p in Permission.ALL if p != permission)
    assert grants(granted, other, group) == grants(roles, other, group)  # the other permission untouched
