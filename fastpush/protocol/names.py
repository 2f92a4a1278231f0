"""Validation of the names clients and callers choose: hubs and groups (the rules of the Azure REST
spec), user ids, event names and invocation ids (which also travel in upstream URLs and headers)."""
import re

__all__ = ["is_valid_hub", "is_valid_group", "hub_error", "group_error", "MAX_GROUP_LENGTH",
           "is_valid_event", "event_error", "MAX_EVENT_LENGTH", "is_valid_user", "user_error", "MAX_USER_LENGTH",
           "is_valid_invocation_id", "invocation_id_error", "MAX_INVOCATION_ID_LENGTH"]

_HUB = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
MAX_GROUP_LENGTH = 1024
MAX_EVENT_LENGTH = 128
MAX_USER_LENGTH = 1024
MAX_INVOCATION_ID_LENGTH = 128  # the SDKs number their invocations ("1", "2", ...); a UUID is 36
# The service's rule for user event names: they become a URL path segment ({event}) and a header value.
_EVENT = re.compile(rf"[A-Za-z][A-Za-z0-9_.\-]{{0,{MAX_EVENT_LENGTH - 1}}}")
# C0 controls and DEL: CR, LF and NUL would split an upstream request's headers; none is printable.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_valid_hub(name: str) -> bool:
    return _HUB.fullmatch(name) is not None


def is_valid_group(name: str) -> bool:
    return 0 < len(name) <= MAX_GROUP_LENGTH and not name.isspace()


def hub_error(name: str) -> str:
    return (f"Invalid hub name '{name[:140]}': it must start with a letter and contain only "
            "letters, digits and _`,.[] (at most 128 characters).")


def group_error(name: str) -> str:
    return (f"Invalid group name '{name[:140]}': it must have 1 to {MAX_GROUP_LENGTH} "
            "characters and not be only whitespace.")


def is_valid_event(name: str) -> bool:
    return _EVENT.fullmatch(name) is not None


def event_error(name: str) -> str:
    return (f"Invalid event name {name[:140]!r}: it must start with a letter and contain only letters, "
            f"digits and _.- (at most {MAX_EVENT_LENGTH} characters).")


def is_valid_user(user_id: str) -> bool:
    """Any Unicode text of 1 to 1024 characters without control characters (CR, LF, NUL, ...)."""
    return 0 < len(user_id) <= MAX_USER_LENGTH and _CONTROL.search(user_id) is None


def user_error(user_id: str) -> str:
    return (f"Invalid user id {user_id[:140]!r}: it must have 1 to {MAX_USER_LENGTH} characters "
            "and no control characters.")


def is_valid_invocation_id(invocation_id: str) -> bool:
    """1 to 128 characters without control characters: it is echoed in every answer and sent to the
    event handler in a header."""
    return 0 < len(invocation_id) <= MAX_INVOCATION_ID_LENGTH and _CONTROL.search(invocation_id) is None


def invocation_id_error(invocation_id: str) -> str:
    return (f"Invalid invocationId {invocation_id[:140]!r}: it must have 1 to {MAX_INVOCATION_ID_LENGTH} "
            "characters and no control characters.")
