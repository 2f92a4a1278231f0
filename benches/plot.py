"""The latency distribution as a PNG: one panel per connection count, one curve per server.

The x axis is "nines" (90 %, 99 %, 99.9 % ... evenly spaced), so the tail gets as much room as the
median. matplotlib is a bench-only dependency and is not installed with fastpush.
"""
from __future__ import annotations

import math
from pathlib import Path

__all__ = ["INSTALL_HINT", "plot_latency"]

INSTALL_HINT = "matplotlib is not installed; `pip install matplotlib` and rerun with --plot to get the chart"


def _nines(percentile: float) -> float:
    return -math.log10(max(1 - percentile / 100, 1e-5))


def plot_latency(rows: list[dict], path: Path) -> str | None:
    """Write the chart; returns why it was skipped, or None."""
    try:
        import matplotlib
    except ImportError:
        return INSTALL_HINT
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r["connections"] for r in rows if r.get("latency", {}).get("curve")})
    if not counts:
        return "no latency samples to plot"
    fig, axes = plt.subplots(1, len(counts), figsize=(6.5 * len(counts), 4.8), squeeze=False)
    ticks = [0, 90, 99, 99.9, 99.99]
    for ax, n in zip(axes[0], counts, strict=True):
        for row in (r for r in rows if r["connections"] == n and r.get("latency", {}).get("curve")):
            points = [(p, ms) for p, ms in row["latency"]["curve"] if p < 100]
            ax.plot([_nines(p) for p, _ in points], [ms for _, ms in points], label=row["label"])
        ax.set_xticks([_nines(t) for t in ticks], [f"{t:g}%" for t in ticks])
        ax.set_xlabel("percentile")
        ax.set_ylabel("publish to receive (ms)")
        ax.set_title(f"{n} connections, isolated broadcasts")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
