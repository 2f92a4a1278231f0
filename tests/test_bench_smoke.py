"""`python -m benches.fanout --quick` runs end to end and writes the JSON it promises, alone and with
the scaled-out rows (`--workers 2 --redis`: one node on Redis, two workers on one port).

Only shape and non-zero counts are checked: timings depend on the machine and never appear in
assertions (the figures come from running the benchmark itself).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT = 180


def _quick(out: Path, *options: str) -> dict:
    """Run the quick benchmark with `options`; its JSON document."""
    done = subprocess.run([sys.executable, "-m", "benches.fanout", "--quick", "--json-out", str(out), *options],
                          cwd=ROOT, check=False, capture_output=True, text=True, timeout=QUICK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "server / mode" in done.stdout
    return json.loads(out.read_text())


def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    document = _quick(tmp_path / "bench.json")
    assert {"machine", "versions", "parameters", "cores", "results", "command"} <= document.keys()
    assert {"python", "picows", "uvloop", "node"} <= document["versions"].keys()
    assert {row["target"] for row in document["results"]} == {"fastpush-rest", "fastpush-embed"}
    for row in document["results"]:
        assert "error" not in row, row
        assert row["connected"] == document["parameters"]["connections"][0]
        assert row["rss_per_connection_bytes"] is not None
        latency = row["latency"]
        assert latency["samples"] > 0 and latency["broadcasts"] > 0
        assert {"p50", "p99", "p99.9", "max", "curve", "last_delivery"} <= latency.keys()
        saturation = row["saturation"]
        assert len(saturation["runs"]) == document["parameters"]["runs"]
        assert all(run["deliveries"] == run["expected"] > 0 for run in saturation["runs"])
        assert saturation["deliveries_per_second"]["median"] > 0
        assert saturation["server_cpu_us_per_delivery"] is not None


def test_quick_benchmark_measures_workers_on_redis(tmp_path: Path) -> None:
    # CI installs redis-server (.ci/run); without it the rows would be skipped, not measured.
    assert shutil.which("redis-server"), "redis-server is not on PATH: apt-get install redis-server"
    document = _quick(tmp_path / "bench.json", "--workers", "2", "--redis")

    assert document["skipped"] == {}
    rows = {row["target"]: row for row in document["results"]}
    assert rows.keys() == {"fastpush-rest", "fastpush-redis", "fastpush-workers"}
    for row in rows.values():
        assert "error" not in row, row
        assert all(run["deliveries"] == run["expected"] > 0 for run in row["saturation"]["runs"])
    workers = rows["fastpush-workers"]
    assert workers["label"] == "fastpush (2 workers, Redis)"
    assert workers["workers"] == 2 and workers["redis"] and not workers["server_pinned"]
    assert workers["latency"]["samples"] > 0
    assert workers["saturation"]["deliveries_per_second"]["median"] > 0
    assert workers["redis_rss_idle_bytes"] > 0
    assert sum(workers["connections_per_worker"]) == workers["connected"]
    assert workers["ratio_vs"] == "fastpush-rest"


def test_drain_benchmark_runs_a_rolling_restart_and_counts_every_message() -> None:
    """`python -m benches.drain` with a few clients: its table, and its exit code 0 (nothing lost,
    repeated or out of order; the figures themselves are not checked)."""
    assert shutil.which("redis-server"), "redis-server is not on PATH: apt-get install redis-server"
    done = subprocess.run([sys.executable, "-m", "benches.drain", "--clients", "20", "--workers", "2"], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=QUICK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["worker", "drain", "s", "clients", "recovered", "p50", "s", "p99", "s", "max", "s"]
    assert len(lines) == 5 and "0 lost, 0 received twice, 0 clients out of order" in lines[4], done.stdout
    for row in lines[2:4]:
        closed, recovered = row.split()[2:4]
        assert closed == recovered, row


def test_quick_benchmark_drives_the_c_floor(tmp_path: Path) -> None:
    """`--quick --peers c-send,c-batch` builds benches/peers/c_broadcast.c with `cc` and measures both
    variants against the embedded fastpush, every delivery counted."""
    assert shutil.which("cc"), "no C compiler on PATH: apt-get install gcc"
    document = _quick(tmp_path / "bench.json", "--peers", "c-send,c-batch")

    assert document["skipped"] == {}
    rows = {row["target"]: row for row in document["results"]}
    assert rows.keys() == {"fastpush-rest", "fastpush-embed", "c-send", "c-batch"}
    for key in ("c-send", "c-batch"):
        row = rows[key]
        assert "error" not in row, row
        assert row["connected"] == document["parameters"]["connections"][0]
        assert row["latency"]["samples"] > 0
        assert all(run["deliveries"] == run["expected"] > 0 for run in row["saturation"]["runs"])
        assert row["ratio_vs"] == "fastpush-embed"


def test_the_c_floor_is_skipped_with_a_note_without_a_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benches import servers

    monkeypatch.setattr(servers, "C_BINARY", tmp_path / "build" / "c_broadcast")
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    assert servers.prepare(next(t for t in servers.PEERS if t.key == "c-batch")) == (
        "no C compiler (`cc`) on PATH: apt-get install gcc")
    assert not (tmp_path / "build").exists()
