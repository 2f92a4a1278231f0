"""The package's structure, checked from its source: imports point one way."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tools.import_graph import cycles, graph_lines, import_graph

ROOT = Path(__file__).resolve().parents[2]
GRAPH = import_graph(ROOT)


def _imports(module: str) -> set[str]:
    return GRAPH[f"fastpush.{module}"]


def test_the_package_has_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_documented_graph_is_the_real_one():
    """docs/architecture.md lists every module's imports (regenerate: python -m tools.import_graph)."""
    documented = [line for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
                  if line.startswith("- `") and "` -> " in line]
    assert documented == graph_lines(GRAPH)


def test_cycles_are_found_when_there_are_some():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def _type_checking_imports(path: Path) -> list[str]:
    """fastpush modules imported under `if TYPE_CHECKING:` in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in (n for statement in node.body for n in ast.walk(statement)):  # not its else
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("fastpush")):
                    found.append(f"{path.name}: {'.' * inner.level}{inner.module or ''}")
    return found


def test_no_fastpush_module_is_imported_only_for_type_checking():
    """A cycle hidden behind `if TYPE_CHECKING:` is still a cycle (the graph counts those imports
    too); the package imports none of its own modules that way, but for the fan-out selector,
    whose type surface is the compiled module's whichever implementation runs."""
    hits = [hit for p in (ROOT / "fastpush").rglob("*.py") for hit in _type_checking_imports(p)]
    assert set(hits) == {"fanout.py: ._fanout"}


@pytest.mark.parametrize("module", ["ops", "outcome", "permissions", "broker.base", "broker.memory",
                                    "broker.redis", "broker.redis.bus", "broker.redis.registry",
                                    "broker.redis.handover", "broker.redis.link"])
def test_the_vocabulary_and_the_brokers_know_no_hub_node_or_connection(module):
    above = {"fastpush.hub", "fastpush.node", "fastpush.client_connection", "fastpush.app", "fastpush.embedding",
             "fastpush.http.rest"}
    assert _imports(module) & above == set()


def test_a_hub_knows_the_broker_only_as_the_registry_protocol():
    assert {m for m in _imports("hub") if m.startswith("fastpush.broker")} == {"fastpush.broker.base"}
    assert _imports("hub") & {"fastpush.node", "fastpush.client_connection"} == set()


def test_protocol_code_imports_nothing_outside_protocol():
    for module, targets in GRAPH.items():
        if module.startswith("fastpush.protocol."):
            assert all(t.startswith("fastpush.protocol.") for t in targets), (module, targets)
