"""The fan-out implementation in use: every other fastpush module takes these names from here.

FASTPUSH_NO_EXTENSIONS, read once, when this module is first imported (changing it later changes
nothing in a running process):

- unset or empty: the compiled `fastpush._fanout` if it is built, else the pure-Python twin
  `fastpush._fanout_py`, with a one-line warning on the "fastpush" logger saying how to build it.
  That happens when a source checkout shadows an installed fastpush (`python -m fastpush` run
  from the checkout's root, which has the sources but not the compiled module);
- `0`: the compiled module, or ImportError if it is not built (what ./check and benchmarks want);
- `1`: the twin; the compiled module is never imported.

A compiled module that is there but cannot be loaded (built for another Python or picows) is an
ImportError in every case, never a quiet fallback. Both implementations have the same API; for
mypy it is the compiled module's, as `_fanout.pyi` describes it.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Final

__all__ = [
    "FANOUT_BUCKETS",
    "IMPLEMENTATION",
    "RELIABLE_VARIANTS",
    "Connection",
    "Frames",
    "Tables",
    "census",
    "fanout",
    "fanout_counts",
    "frame",
    "recipient_failures",
    "trim_transport",
]

_SWITCH = "FASTPUSH_NO_EXTENSIONS"


def _choice() -> str:
    """What FASTPUSH_NO_EXTENSIONS asks for: "twin", "compiled" or "either"."""
    value = os.environ.get(_SWITCH, "")
    if value not in ("", "0", "1"):
        raise ImportError(f"{_SWITCH} must be 1 (pure Python) or 0 (compiled), not {value!r}")
    return {"": "either", "0": "compiled", "1": "twin"}[value]


def _build_hint() -> str:
    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    if os.path.exists(os.path.join(root, "setup.py")):  # a source checkout
        how = f"run `pip install -e .` or `python3 setup.py build_ext --inplace` in {root}"
    else:
        how = "reinstall fastpush"
    return f"the compiled fan-out is not built in {package}: {how}"


if TYPE_CHECKING:
    from ._fanout import (
        FANOUT_BUCKETS,
        RELIABLE_VARIANTS,
        Connection,
        Frames,
        Tables,
        census,
        fanout,
        fanout_counts,
        frame,
        recipient_failures,
        trim_transport,
    )
elif (_CHOICE := _choice()) == "twin":
    from ._fanout_py import (
        FANOUT_BUCKETS,
        RELIABLE_VARIANTS,
        Connection,
        Frames,
        Tables,
        census,
        fanout,
        fanout_counts,
        frame,
        recipient_failures,
        trim_transport,
    )
else:
    try:
        from ._fanout import (
            FANOUT_BUCKETS,
            RELIABLE_VARIANTS,
            Connection,
            Frames,
            Tables,
            census,
            fanout,
            fanout_counts,
            frame,
            recipient_failures,
            trim_transport,
        )
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}._fanout":
            raise  # something the compiled module imports is missing: not ours to hide
        if _CHOICE == "compiled":
            raise ImportError(f"{_build_hint()} ({_SWITCH}=0 asks for it; "
                              f"{_SWITCH}=1 runs on the pure-Python twin)") from exc
        logging.getLogger("fastpush").warning(
            "fastpush runs on its pure-Python fan-out (slower): %s (or set %s=1 to choose the "
            "pure-Python one without this warning)", _build_hint(), _SWITCH)
        from ._fanout_py import (
            FANOUT_BUCKETS,
            RELIABLE_VARIANTS,
            Connection,
            Frames,
            Tables,
            census,
            fanout,
            fanout_counts,
            frame,
            recipient_failures,
            trim_transport,
        )
    except ImportError as exc:
        raise ImportError(f"{exc}: the compiled fan-out in {os.path.dirname(os.path.abspath(__file__))} "
                          f"cannot be loaded: rebuild it (`pip install -e .` or `python3 setup.py build_ext "
                          f"--inplace` in a checkout), or set {_SWITCH}=1 to run without it") from exc

# The module in use: "fastpush._fanout" (compiled) or "fastpush._fanout_py" (the twin).
IMPLEMENTATION: Final[str] = Connection.__module__
