"""`python -m benches.scale --quick` runs end to end: 300 subscribers on `fastpush serve --workers 2` with
its own redis-server, every phase measured, and every subscriber back after both workers were
restarted at once (the reconnect storm).

Only shape and counts are checked: timings depend on the machine and never appear in assertions (the
figures come from running the benchmark itself).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT = 240


def test_quick_scale_benchmark_measures_every_phase_and_the_storm(tmp_path: Path) -> None:
    assert shutil.which("redis-server"), "redis-server is not on PATH: apt-get install redis-server"
    out = tmp_path / "scale.json"
    # the workers run `python -P -m fastpush`: this checkout must be importable without the current directory
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "benches.scale", "--quick", "--json-out", str(out)], cwd=ROOT,
                          env=env, check=False, capture_output=True, text=True, timeout=QUICK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "storm back s" in done.stdout
    document = json.loads(out.read_text())
    assert {"machine", "versions", "parameters", "load_average", "results", "command"} <= document.keys()
    [row] = document["results"]
    assert "error" not in row, row
    n = document["parameters"]["connections"][0]
    assert row["connected"] == n and row["workers"] == 2 and row["redis"]
    ramp = row["ramp"]
    assert ramp["failures"] == 0 and ramp["per_second"] > 0 and ramp["handshake"]["samples"] == n
    assert ramp["server_cpu_us_per_handshake"] is not None
    assert row["rss_per_connection_bytes"] is not None
    assert row["latency"]["samples"] > 0 and not row["latency"]["timeouts"]
    assert all(run["deliveries"] == run["expected"] > 0 for run in row["saturation"]["runs"])
    storm = row["storm"]
    assert storm["workers_restarted"] == 2
    assert storm["all_back"] and storm["back"] == storm["expected"] == n and storm["closed"] >= n
    assert storm["seconds"] is not None and storm["handshake"]["samples"] >= n
    assert sum(storm["connections_per_worker"]) == n


def test_quick_scale_benchmark_with_a_connect_handler_reports_it(tmp_path: Path) -> None:
    """--connect-handler-ms: every handshake (the storm's too) waits for a local connect handler,
    which the storm's figures report. (A 503 may still come from a worker draining, so the
    storm's errors are not checked.)"""
    out = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "benches.scale", "--quick", "--connect-handler-ms", "2",
                           "--json-out", str(out)], cwd=ROOT, env=env, check=False, capture_output=True, text=True,
                          timeout=QUICK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "connect events answered" in done.stdout
    [row] = json.loads(out.read_text())["results"]
    storm = row["storm"]
    assert storm["all_back"], storm
    upstream = storm["connect_upstream"]
    assert upstream["answered"] >= storm["expected"] and 0 < upstream["peak_in_flight"] <= 2 * 64
