"""`python -m benches.ticker --quick --conflate` runs end to end: every server is measured or skipped with
its reason, every measured row has every phase with positive figures, and the tables are printed.

Centrifugo is measured when a v6.9.1 binary is here and skipped with its note otherwise (--quick never
builds it, so CI without Go skips it); the conflation row is measured when this fastpush accepts
`conflateGroups`, skipped with its note otherwise. Only shape and non-zero counts are checked, never
a timing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benches import centrifugo
from benches.ticker_servers import conflation_support

ROOT = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT = 300
#: two latency steps instead of --quick's four (25, 50, 75, 90 %): the lowest and the highest load go
#: through the same code as the two between, and each step keeps its 2 s (0.5 s steps on a loaded
#: machine sometimes recorded no delivery); about 20 s less of CI per pass
FEWER_STEPS = ("--loads", "25,90")
TABLES = ("capacity", "latency at a share of each server's capacity", "slow readers")


def _positive_latency(summary: dict) -> None:
    assert summary["samples"] > 0, summary
    assert 0 < summary["p50"] <= summary["p99"] <= summary["p99.9"] <= summary["max"], summary


def _check_slow(row: dict, slow_clients: int) -> None:
    slow = row["slow"]
    assert slow["slow_clients"] == slow_clients
    assert slow["delivered_per_second"] > 0 and slow["slow_delivered_per_second"] > 0
    _positive_latency(slow["latency"])
    _positive_latency(slow["staleness"])
    assert slow["lost"]["healthy"] >= 0 and 0 <= slow["lost"]["slow"] <= slow_clients
    assert slow["rss_bytes"] > 0


def test_quick_ticker_measures_every_server_or_says_why_not(tmp_path: Path) -> None:
    out = tmp_path / "ticker.json"
    done = subprocess.run([sys.executable, "-m", "benches.ticker", "--quick", "--conflate", *FEWER_STEPS,
                           "--json-out", str(out)],
                          cwd=ROOT, check=False, capture_output=True, text=True, timeout=QUICK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(title in done.stdout for title in TABLES), done.stdout
    document = json.loads(out.read_text())
    rows = {row["target"]: row for row in document["results"]}
    skipped = document["skipped"]

    expected = {"fastpush", "node-ws"}
    if centrifugo.binary() is None:
        assert f"Centrifugo v{centrifugo.VERSION}" in skipped["centrifugo"]
        assert f"skipped centrifugo: {skipped['centrifugo']}" in done.stdout
    else:
        expected.add("centrifugo")
    if conflation_support(tmp_path)[0] is None:
        assert "conflateGroups" in skipped["fastpush-conflate"]
        assert "conflation row skipped" in done.stdout
    else:
        expected.add("fastpush-conflate")
    assert rows.keys() == expected

    parameters = document["parameters"]
    clients = parameters["workload"]["clients"]
    slow_clients = round(clients * parameters["slow_share"])
    for key, row in rows.items():
        assert "error" not in row, row
        assert row["connected"] == clients and row["connect_failures"] == 0
        assert row["rss_idle_bytes"] > 0 and row["mean_deliveries_per_tick"] > 0
        _check_slow(row, slow_clients)
        if key == "fastpush-conflate":
            assert "capacity" not in row  # it runs at fastpush's tick rate
            continue
        capacity = row["capacity"]
        assert len(capacity["runs"]) == parameters["runs"]
        assert all(run["deliveries"] == run["expected"] > 0 for run in capacity["runs"])
        assert capacity["deliveries_per_second"]["median"] > 0
        assert [step["load"] for step in row["steps"]] == parameters["loads"]
        for step in row["steps"]:
            assert step["delivered_per_second"] > 0 and step["rss_bytes"] > 0
            _positive_latency(step["latency"])
        # CPU time is read in 10 ms clock ticks: one short phase may show none, the whole row cannot.
        phases = [*capacity["runs"], *row["steps"], row["slow"]]
        assert all(phase["server_cpu_seconds"] >= 0 for phase in phases)
        assert sum(phase["server_cpu_seconds"] for phase in phases) > 0
