"""The printed table: one row per server and connection count, ratios against fastpush in the same run."""
from __future__ import annotations

__all__ = ["BASELINE", "REDIS_BASELINE", "ratios", "scaling", "table"]

BASELINE = ("fastpush-embed", "fastpush-rest")  # compare peers with fastpush behind the same trigger first
REDIS_BASELINE = ("fastpush-rest",)  # a Redis deployment against one process, both published to through REST

HEADERS = ("server / mode", "N", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "last p50 ms",
           "deliveries/s median (min-max)", "srv us/deliv", "RSS/conn", "loadgen us/msg lat|sat",
           "fp/this p99", "fp/this rate")


def ratios(rows: list[dict]) -> None:
    """Add `ratio_p99` and `ratio_rate` (fastpush / this row) to every measured row, per N."""
    for n in {r["connections"] for r in rows}:
        same_n = {r["target"]: r for r in rows if r["connections"] == n and "error" not in r}
        for row in same_n.values():
            base = next((same_n[k] for k in (REDIS_BASELINE if row["redis"] else BASELINE) if k in same_n), None)
            row["ratio_vs"] = base["target"] if base else None
            row["ratio_p99"] = _ratio(_p99(base), _p99(row))
            row["ratio_rate"] = _ratio(_rate(base), _rate(row))


def _p99(row: dict | None) -> float | None:
    return row["latency"].get("p99") if row else None


def _rate(row: dict | None) -> float | None:
    return row["saturation"]["deliveries_per_second"]["median"] if row else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def scaling(rows: list[dict]) -> list[str]:
    """One line per Redis row: its p99 and saturation rate against one fastpush process at the same N,
    in words, since that comparison is why the Redis rows are there."""
    lines = []
    for row in rows:
        if "error" in row or not row["redis"] or row["ratio_vs"] is None:
            continue
        base = next(r for r in rows if r["target"] == row["ratio_vs"] and r["connections"] == row["connections"])
        gain = _ratio(_rate(row), _rate(base))
        lines.append(f"{row['label']} vs {base['label']}, N={row['connections']}: p99 {_ms(_p99(row))} vs "
                     f"{_ms(_p99(base))} ms; saturation {_count(_rate(row))} vs {_count(_rate(base))} deliveries/s"
                     + (f" ({gain:.2f}x)" if gain else ""))
    return lines


def table(rows: list[dict]) -> str:
    lines: list[str] = []
    footnotes: list[tuple[int, dict]] = []
    cells: list[tuple[str, ...]] = [HEADERS]
    for row in rows:
        mark = ""
        if row.get("error") or row.get("notes"):
            footnotes.append((len(footnotes) + 1, row))
            mark = f" [{len(footnotes)}]"
        cells.append(_cells(row, mark))
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    for i, c in enumerate(cells):
        padded = (v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(c, widths, strict=True)))
        lines.append("  ".join(padded))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for number, row in footnotes:
        for text in ([row["error"]] if row.get("error") else row["notes"]):
            lines.append(f"[{number}] {row['label']} N={row['connections']}: {text}")
    return "\n".join(lines)


def _cells(row: dict, mark: str) -> tuple[str, ...]:
    head = (row["label"] + mark, str(row["connections"]))
    if row.get("error"):
        return head + ("-",) * (len(HEADERS) - 2)
    lat, sat = row["latency"], row["saturation"]
    rate = sat["deliveries_per_second"]
    return (
        *head,
        _ms(lat.get("p50")), _ms(lat.get("p99")), _ms(lat.get("p99.9")), _ms(lat.get("max")),
        _ms(lat["last_delivery"].get("p50")),
        f"{_count(rate['median'])} ({_count(rate['min'])}-{_count(rate['max'])})",
        _num(sat["server_cpu_us_per_delivery"]),
        f"{row['rss_per_connection_bytes'] / 1024:.1f} KiB",
        f"{_num(lat['loadgen_cpu_us_per_message'])}|{_num(sat['loadgen_cpu_us_per_message'])}",
        _x(row.get("ratio_p99")), _x(row.get("ratio_rate")),
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k" if value >= 1e4 else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
