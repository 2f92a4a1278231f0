"""The fan-out implementation in use: every other fastpush module takes these names from here.

By default it is the compiled `fastpush._fanout`. With FASTPUSH_NO_EXTENSIONS=1 in the
environment when this module is first imported, it is `fastpush._fanout_py`, the pure-Python
twin, and the compiled module is never imported (the variable is read once: changing it later
changes nothing in a running process). Both have the same API; for mypy it is the compiled
module's, as `_fanout.pyi` describes it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

__all__ = [
    "IMPLEMENTATION",
    "RELIABLE_VARIANTS",
    "Connection",
    "Frames",
    "Tables",
    "fanout",
    "frame",
    "recipient_failures",
    "trim_transport",
]

_SWITCH = "FASTPUSH_NO_EXTENSIONS"


def _wants_twin() -> bool:
    value = os.environ.get(_SWITCH, "")
    if value not in ("", "0", "1"):
        raise ImportError(f"{_SWITCH} must be 1 (pure Python) or 0 (compiled), not {value!r}")
    return value == "1"


if TYPE_CHECKING:
    from ._fanout import (
        RELIABLE_VARIANTS,
        Connection,
        Frames,
        Tables,
        fanout,
        frame,
        recipient_failures,
        trim_transport,
    )
elif _wants_twin():
    from ._fanout_py import (
        RELIABLE_VARIANTS,
        Connection,
        Frames,
        Tables,
        fanout,
        frame,
        recipient_failures,
        trim_transport,
    )
else:
    try:
        from ._fanout import (
            RELIABLE_VARIANTS,
            Connection,
            Frames,
            Tables,
            fanout,
            frame,
            recipient_failures,
            trim_transport,
        )
    except ImportError as exc:
        raise ImportError(f"{exc}: build fastpush/_fanout.pyx (python setup.py build_ext --inplace), "
                          f"or set {_SWITCH}=1 to run without it") from exc

# The module in use: "fastpush._fanout" (compiled) or "fastpush._fanout_py" (the twin).
IMPLEMENTATION: Final[str] = Connection.__module__
