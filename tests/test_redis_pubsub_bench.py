"""`python -m benches.redis_pubsub` runs end to end: every message published reaches every node
(none lost: the bench counts them all), and the registry measure answers. Only shape and counts
are checked: the figures come from running the benchmark itself."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(*options: str) -> str:
    done = subprocess.run([sys.executable, "-m", "benches.redis_pubsub", *options], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_pubsub_rows(tmp_path: Path) -> None:
    out = tmp_path / "pubsub.json"
    _bench("--nodes", "1,2", "--payload-bytes", "100", "--seconds", "0.3", "--light-rate", "200", "--replica",
           "--json-out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(row["nodes"], row["payload_bytes"]) for row in rows] == [(1, 100), (2, 100)]
    for row in rows:
        assert row["published_per_s"] > 0 and row["lost"] == 0, row
        assert row["delivered_per_s"] == pytest.approx(row["published_per_s"] * row["nodes"])
        assert row["envelope_bytes"] > row["payload_bytes"]


def test_registry_cost() -> None:
    lines = _bench("--registry", "200").splitlines()
    assert lines[0].split()[:2] == ["connections", "groups"] and len(lines) == 4
    assert all(line.split()[0] == "200" for line in lines[1:])
