"""Cold start: ``python worker.py`` with the embedded dev server, from spawn to "worker polling".

    .venv/bin/python -m bench.coldstart [--runs 5]

Each run starts ``worker.py`` as ``make run`` does, but on free loopback ports and in a temp data
directory (``CASES_DATA_DIR``, ``CASES_DATABASE_URL``), with no Temporal address configured, and
times the log line ``worker polling``; then stops it with SIGTERM. ``fresh`` runs start from an
empty data directory (the server creates its SQLite file, the case store its schema); ``again``
runs reuse the previous run's directory (yesterday's ``make run``). The file cache is warm (the
machine is shared; it is not dropped). The ``temporal dev server ready`` line gives the split:
the server's own readiness, measured by the worker.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, banner, free_port, load, table, write_results

GOAL_S = 5.0
WITHIN_S = 60.0
READY = re.compile(r"temporal dev server ready.*?ready_s=([\d.]+)")


def one_run(data_dir: Path) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TEMPORAL_") and not k.startswith("CASES_")
    }
    env.update(
        CASES_DATA_DIR=str(data_dir),
        CASES_DATABASE_URL=f"sqlite+aiosqlite:///{data_dir / 'cases.db'}",
        CASES_DEV_SERVER_PORT=str(free_port()),
        CASES_UI_PORT=str(free_port()),
        CASES_HTTP_PORT=str(free_port()),
        TEMPORAL_CONFIG_FILE=str(data_dir / "no-such-temporal.toml"),
        CASES_LOG_FORMAT="console",
    )
    started = time.monotonic()
    process = subprocess.Popen(
        [PYTHON, "worker.py"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    polling: float | None = None
    server_ready: float | None = None
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        nonlocal polling, server_ready
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if (m := READY.search(line)) and server_ready is None:
                server_ready = float(m[1])
            if "worker polling" in line and polling is None:
                polling = time.monotonic() - started
                found.set()
        found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    found.wait(WITHIN_S)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    reader.join(5)
    if polling is None:
        tail = "".join(lines[-5:])
        raise RuntimeError(f"worker.py never logged 'worker polling' (exit {code}):\n{tail}")
    return {"to_polling_s": round(polling, 3), "server_ready_s": server_ready, "exit_code": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--name", default="coldstart")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"fresh": [], "again": []}
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        for i in range(args.runs):
            data = Path(tmp) / f"run-{i}"
            banner(f"cold start {i + 1}/{args.runs}: fresh data dir")
            results["fresh"].append({**one_run(data), "load": load()[0]})
            banner(f"cold start {i + 1}/{args.runs}: same data dir again")
            results["again"].append({**one_run(data), "load": load()[0]})
    rows = []
    summary = {}
    for kind, runs in results.items():
        times = [r["to_polling_s"] for r in runs]
        ready = [r["server_ready_s"] for r in runs if r["server_ready_s"] is not None]
        summary[kind] = {
            "median_s": round(statistics.median(times), 2),
            "max_s": round(max(times), 2),
            "server_ready_median_s": round(statistics.median(ready), 2) if ready else None,
        }
        rows.append(
            (
                kind,
                len(times),
                summary[kind]["median_s"],
                min(times),
                summary[kind]["max_s"],
                summary[kind]["server_ready_median_s"],
                round(summary[kind]["max_s"] / GOAL_S, 2),
            )
        )
    print()
    print(
        table(
            ["data dir", "runs", "median s", "min s", "max s", "server ready s", "max / goal"],
            rows,
        )
    )
    path = write_results(args.name, {"runs": args.runs, "results": results, "summary": summary})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
