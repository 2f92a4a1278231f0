"""Validation of hub and group names, with the rules of the Azure REST spec."""
import re

__all__ = ["is_valid_hub", "is_valid_group", "hub_error", "group_error", "MAX_GROUP_LENGTH"]

_HUB = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
MAX_GROUP_LENGTH = 1024


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
