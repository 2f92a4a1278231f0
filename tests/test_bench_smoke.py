"""`python -m benches.fanout --quick` runs end to end and writes the JSON it promises.

Only shape and non-zero counts are checked: timings depend on the machine and never appear in
assertions (the figures come from running the benchmark itself).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT = 180


def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "benches.fanout", "--quick", "--json-out", str(out)],
                          cwd=ROOT, check=False, capture_output=True, text=True, timeout=QUICK_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "server / mode" in done.stdout

    document = json.loads(out.read_text())
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
