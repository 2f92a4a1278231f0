"""Every operation and question in fastpush.ops has a case in this conformance suite: a new one
cannot be added without saying how both brokers must carry it."""
from __future__ import annotations

import re
import typing
from pathlib import Path

from fastpush import ops


def test_every_operation_and_question_is_exercised_here():
    here = Path(__file__).parent
    source = "\n".join(path.read_text() for path in here.glob("*.py") if path.name != Path(__file__).name)
    used = set(re.findall(r"\bops\.(\w+)\(", source))
    vocabulary = {cls.__name__ for cls in (*typing.get_args(ops.Op), *typing.get_args(ops.Query))}
    assert vocabulary - used == set()
