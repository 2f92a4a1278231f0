"""Charts as PNGs: the latency distribution (benches.fanout: one panel per connection count, one curve
per server) and each figure against the connection count (benches.scale).

The latency chart's x axis is "nines" (90 %, 99 %, 99.9 % ... evenly spaced), so the tail gets as much
room as the median. matplotlib is a bench-only dependency and is not installed with fastpush.
"""
from __future__ import annotations

import math
from pathlib import Path

__all__ = ["INSTALL_HINT", "plot_latency", "plot_scaling"]

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


_SCALING_PANELS = (
    ("connections per second while ramping", lambda r: r["ramp"]["per_second"]),
    ("RSS per connection (KiB)", lambda r: r["rss_per_connection_bytes"] / 1024),
    ("isolated broadcast p99 (ms)", lambda r: r["latency"].get("p99")),
    ("saturation deliveries per second", lambda r: r["saturation"]["deliveries_per_second"]["median"]),
    ("reconnect storm: seconds until all back", lambda r: (r.get("storm") or {}).get("seconds")),
)


def plot_scaling(rows: list[dict], path: Path) -> str | None:
    """One panel per figure of benches.scale against N; returns why it was skipped, or None."""
    try:
        import matplotlib
    except ImportError:
        return INSTALL_HINT
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = sorted((r for r in rows if "error" not in r), key=lambda r: r["connections"])
    if not measured:
        return "no measured row to plot"
    fig, axes = plt.subplots(1, len(_SCALING_PANELS), figsize=(4.2 * len(_SCALING_PANELS), 3.8), squeeze=False)
    for ax, (title, figure) in zip(axes[0], _SCALING_PANELS, strict=True):
        points = [(r["connections"], value) for r in measured if (value := figure(r)) is not None]
        ax.plot([n for n, _ in points], [v for _, v in points], marker="o")
        ax.set_xlabel("connections")
        ax.set_title(title, fontsize="medium")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
