"""The ticker benchmark's three printed tables (capacity, latency at load, slow readers) and their notes."""
from __future__ import annotations

from collections.abc import Sequence

from .report import _count, _ms, _num

__all__ = ["tables"]

CAPACITY = ("server", "N", "deliv/tick", "capacity deliv/s median (min-max)", "srv us/deliv", "loadgen us/deliv",
            "RSS/conn", "RSS MiB")
STEPS = ("server", "load", "ticks/s", "offered/s", "delivered/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
         "srv us/deliv", "srv core", "RSS MiB")
SLOW = ("server", "conflation", "ticks/s", "delivered/s", "healthy p50 ms", "healthy p99 ms", "slow age p50 ms",
        "slow age p99 ms", "slow age max ms", "slow read/s", "disconnected slow|healthy", "close codes", "RSS MiB")


def _render(headers: Sequence[str], cells: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(c[i]) for c in [tuple(headers), *cells]) for i in range(len(headers))]
    lines = []
    for i, row in enumerate([tuple(headers), *cells]):
        lines.append("  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths,
                                                                                                 strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _capacity(row: dict, mark: str) -> tuple[str, ...]:
    head = (row["label"] + mark, str(row["connections"]))
    if "capacity" not in row:
        return head + ("-",) * (len(CAPACITY) - 2)
    rate = row["capacity"]["deliveries_per_second"]
    return (*head, f"{row['mean_deliveries_per_tick']:.0f}",
            f"{_count(rate['median'])} ({_count(rate['min'])}-{_count(rate['max'])})",
            _num(row["capacity"]["server_cpu_us_per_delivery"]), _num(row["capacity"]["loadgen_cpu_us_per_delivery"]),
            f"{row['rss_per_connection_bytes'] / 1024:.1f} KiB",
            _mib(row["rss_idle_bytes"]))


def _step(row: dict, step: dict) -> tuple[str, ...]:
    lat = step["latency"]
    return (row["label"], f"{step['load']:.0%}", f"{step['tick_rate']:.0f}", _count(step["offered_per_second"]),
            _count(step["delivered_per_second"]), _ms(lat.get("p50")), _ms(lat.get("p99")), _ms(lat.get("p99.9")),
            _ms(lat.get("max")), _num(step["server_cpu_us_per_delivery"]), f"{step['server_core_busy']:.0%}",
            _mib(step["rss_bytes"]))


def _slow(row: dict, mark: str) -> tuple[str, ...]:
    slow = row["slow"]
    lat, age = slow["latency"], slow["staleness"]
    codes = ", ".join(f"{code} x{count}" for code, count in sorted(slow["close_codes"].items())) or "-"
    return (row["label"] + mark, "on" if row["target"].endswith("conflate") else "off", f"{slow['tick_rate']:.0f}",
            _count(slow["delivered_per_second"]), _ms(lat.get("p50")), _ms(lat.get("p99")), _ms(age.get("p50")),
            _ms(age.get("p99")), _ms(age.get("max")), _count(slow["slow_delivered_per_second"]),
            f"{slow['lost']['slow']}/{slow['slow_clients']}|{slow['lost']['healthy']}", codes, _mib(slow["rss_bytes"]))


def tables(rows: list[dict], skipped: dict[str, str]) -> str:
    capacity, steps, slow, footnotes = [], [], [], []
    for row in rows:
        mark = ""
        if row.get("error") or row.get("notes"):
            footnotes.append(row)
            mark = f" [{len(footnotes)}]"
        if row.get("error"):
            capacity.append((row["label"] + mark, str(row["connections"])) + ("-",) * (len(CAPACITY) - 2))
            continue
        if "capacity" in row:
            capacity.append(_capacity(row, mark))
            steps.extend(_step(row, step) for step in row["steps"])
        if "slow" in row:
            slow.append(_slow(row, "" if "capacity" in row else mark))  # the mark goes where the row first shows
    lines = ["capacity", *_render(CAPACITY, capacity), "", "latency at a share of each server's capacity",
             *_render(STEPS, steps), "", "slow readers", *_render(SLOW, slow)]
    for number, row in enumerate(footnotes, 1):
        for text in [row["error"]] if row.get("error") else row["notes"]:
            lines.append(f"[{number}] {row['label']}: {text}")
    for key, reason in skipped.items():
        lines.append(f"skipped {key}: {reason}")
    return "\n".join(lines)
