"""The README's figure: lateness, throughput, memory at scale, update latency (``bench/results``).

.venv/bin/python -m bench.plot   # writes bench/engine-benchmarks.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import RESULTS

OUT = Path(__file__).resolve().parent / "engine-benchmarks.png"
COLORS = {
    "bare": "#888888",
    "bare-same-job": "#555555",
    "engine-noop": "#1f77b4",
    "engine": "#d62728",
}


def read(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def scale_panels(
    runs: list[dict[str, Any]],
    measured: list[dict[str, Any]],
    cases: int,
    memory: Any,
    updates: Any,
) -> None:
    """Worker RSS against open cases (``runs``), and update round trips warm and evicted, per
    kind (``measured``: runs at ``cases`` open cases that measured updates)."""
    for run in runs:
        levels = [x for x in run["levels"] if x["open_cases"] and not x.get("capped")]
        memory.plot(
            [x["open_cases"] for x in levels],
            [x["rss_mib"] for x in levels],
            marker="o",
            color=COLORS.get(run["kind"]),
            label=f"{run['kind']} worker",
        )
        memory.plot(
            [x["open_cases"] for x in levels],
            [x["server_rss_mib"] for x in levels],
            marker="s",
            linestyle=":",
            color=COLORS.get(run["kind"]),
            label=f"{run['kind']} dev server",
        )
    memory.set_xscale("log")
    memory.set_xlabel("open cases, waiting")
    memory.set_ylabel("RSS (MiB)")
    memory.set_title("memory against open cases (cache 1,000)")
    memory.grid(alpha=0.3)
    memory.legend(fontsize=8)
    bars = [
        (f"{run['kind']}\n{which}", run["kind"], u)
        for which in ("warm", "evicted")
        for run in measured
        if (u := run["updates"].get(which))
    ]
    for i, (_, kind, u) in enumerate(bars):
        updates.bar(i - 0.2, u["p50_ms"], 0.4, color=COLORS.get(kind), alpha=0.5)
        updates.bar(i + 0.2, u["p99_ms"], 0.4, color=COLORS.get(kind))
        updates.annotate(f"{u['p99_ms']:.0f}", (i + 0.2, u["p99_ms"]), ha="center", va="bottom")
    updates.axhline(500, color="black", linestyle="--", linewidth=1, label="evicted goal 500 ms")
    updates.set_xticks(range(len(bars)), [label for label, _, _ in bars], fontsize=8)
    updates.set_ylabel("update round trip (ms): p50 light, p99 dark")
    updates.set_title(f"transition update at {cases:,} open cases")
    updates.legend(loc="upper left", fontsize=8)


def main() -> None:
    deadlines, lifecycle = read("deadlines"), read("lifecycle")
    # Memory and updates: the latest scale run of every kind in one run (the lean shell's, at
    # 5,000 open cases), else the runs at 20,000 of 2026-12-06, else the interim one at 4,000.
    latest = read("scale-5000")
    bare_run = read("scale-bare-20000") or read("scale-20000")
    runs = [r for doc in (bare_run, read("scale-engine-20000")) if doc for r in doc["runs"]]
    kinds_measured = {r["kind"] for r in runs if r["updates"].get("evicted")}
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), width_ratios=[3, 2])
    (left, right), (memory, updates) = axes
    if latest and {r["kind"] for r in latest["runs"] if r["updates"].get("evicted")} >= {
        "bare",
        "engine",
    }:
        scale_panels(latest["runs"], latest["runs"], latest["cases"], memory, updates)
    elif kinds_measured >= {"bare", "engine"}:
        scale_panels(runs, runs, 20_000, memory, updates)
    elif interim := read("scale-4000"):
        scale_panels(runs or interim["runs"], interim["runs"], interim["cases"], memory, updates)
    if deadlines:
        for p in deadlines["phases"]:
            values = sorted(p["lateness_s"])
            if len(values) < p["cases"]:
                continue  # an incomplete read (some never seen acting) is no distribution
            share = [(i + 1) / len(values) for i in range(len(values))]
            left.step(
                values,
                share,
                where="post",
                color=COLORS.get(p["kind"]),
                label=(
                    f"{p['kind']}: p50 {p['lateness_p50_s']:.2f} s, max {p['lateness_max_s']:.2f} s"
                ),
            )
        left.set_xlabel("lateness: acted - due (s)")
        left.set_ylabel("share of cases acted")
        left.set_title(f"{deadlines['cases']} deadlines due at the same instant")
        left.grid(alpha=0.3)
        left.legend(loc="lower right", fontsize=8)
    if lifecycle:
        phases = lifecycle["phases"]
        bare = [p["cases_per_s"] for p in phases if p["kind"] == "bare"]
        base = sum(bare) / len(bare) if bare else 1.0
        labels = [p["kind"] for p in phases]
        ratios = [p["cases_per_s"] / base for p in phases]
        bars = right.bar(range(len(phases)), ratios, color=[COLORS.get(k, "#444") for k in labels])
        for bar, p in zip(bars, phases, strict=True):
            right.annotate(
                f"{p['cases_per_s']:.1f}/s",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        right.axhline(1.0, color="black", linestyle="--", linewidth=1, label="goal 1.0")
        right.set_xticks(range(len(phases)), labels, rotation=20)
        right.set_ylabel("throughput / bare")
        right.set_title(f"lifecycle throughput, {lifecycle['cases']} cases")
        right.set_ylim(0, max(1.2, max(ratios) * 1.15))
        right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"written: {OUT}")


if __name__ == "__main__":
    main()
