"""mypy sees the fan-out through `_fanout.pyi` whichever implementation runs, so that stub must be
true of both: every name fastpush.fanout exports, every method and attribute the stub declares,
with the same parameters, exists in the compiled module and in its twin."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from fastpush import _fanout, _fanout_py, fanout

STUB = ast.parse(Path(_fanout.__file__).with_name("_fanout.pyi").read_text())
API = [name for name in fanout.__all__ if name != "IMPLEMENTATION"]
IMPLEMENTATIONS = pytest.mark.parametrize("impl", [_fanout, _fanout_py], ids=["compiled", "python"])


def _declared(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname == alias.name:  # an explicit re-export
                    names[alias.name] = node
    return names


DECLARED = _declared(STUB.body)


def _parameters(node: ast.FunctionDef) -> list[str]:
    args = node.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"]


def _runtime_parameters(function: object) -> list[str] | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a compiled method may not tell
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()):
        return None  # a compiled __init__: (*args, **kwargs)
    return [p for p in signature.parameters if p != "self"]


@IMPLEMENTATIONS
def test_the_selector_exports_what_each_implementation_exports(impl):
    assert sorted(API) == sorted(impl.__all__)
    assert not set(API) - set(DECLARED), "declare them in _fanout.pyi"


@IMPLEMENTATIONS
def test_every_stub_declaration_holds_for_both(impl):
    for name, node in DECLARED.items():
        assert hasattr(impl, name), name
        if isinstance(node, ast.FunctionDef):
            assert _runtime_parameters(getattr(impl, name)) in (None, _parameters(node)), name
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(impl, name)
        for member, declaration in _declared(node.body).items():
            if isinstance(declaration, ast.AnnAssign):  # an attribute: set on every instance
                assert member in getattr(cls, "__slots__", ()) or hasattr(cls, member), f"{name}.{member}"
                continue
            assert hasattr(cls, member), f"{name}.{member}"
            value = inspect.getattr_static(cls, member)
            if isinstance(declaration, ast.FunctionDef) and not isinstance(value, property) and callable(value):
                assert _runtime_parameters(getattr(cls, member)) in (None, _parameters(declaration)), \
                    f"{name}.{member}"
