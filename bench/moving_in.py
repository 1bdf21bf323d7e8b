"""Moving in at scale: ``python -m starter import`` of N cases, beside bare starts of as many.

    .venv/bin/python -m bench.moving_in [--cases 10000] [--concurrency 16] [--cap 1800]

One in-memory dev server; two phases, each with a fresh worker process on its own task queue:

- ``bare``: ``bench.bare.BareCase`` started N times by this process, ``--concurrency`` at once,
  each counted once it answers a query (its first workflow task done, the two activities of its
  opening under way): Temporal's own cost of a start and its first answer.
- ``engine``: ``python -m starter import FILE`` as a user runs it (its own process) with the
  same concurrency on an N-row CSV export of the waiting statuses at several ages (some past a
  deadline: those move at once, with their notice); the project's worker as shipped, its case
  store SQLite. The CLI counts a case once it answers ``snapshot`` (its number claimed, its
  rows and outbox messages recorded, its timer armed).

Rate = N / wall seconds of the phase (the CLI's process start included); the worker's and the
server's CPU seconds over the phase too.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import bare
from bench.common import (
    banner,
    bounded,
    dev_server,
    load,
    measured,
    table,
    worker_process,
    write_results,
)
from starter.backlog import REQUIRED

DAY = timedelta(days=1)
# The waiting statuses of a real backlog, at ages on both sides of their clocks.
MIX = (
    ("Pending Customer Response", 3 * DAY),
    ("Pending Customer Response", 20 * DAY),
    ("Pending Customer Response", 35 * DAY),  # moves to Closing on import
    ("Tier 1 Analysis", 2 * DAY),
    ("Tier 2 Analysis", 5 * DAY),
    ("Development", 30 * DAY),
    ("Pending Work Plan", 200 * DAY),
    ("Closing", 6 * DAY),
    ("Waiting for Vendor Input", 12 * DAY),
    ("Pending Customer Testing", 40 * DAY),
)
COLUMNS = (*REQUIRED, "imported.source")


def export(path: Path, prefix: str, count: int, now: datetime) -> dict[str, int]:
    """An N-row export; how many rows of each status."""
    counts: dict[str, int] = {}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for n in range(count):
            status, age = MIX[n % len(MIX)]
            counts[status] = counts.get(status, 0) + 1
            number = f"{prefix}-{n:06d}"
            since = now - age - timedelta(minutes=n % 600)
            writer.writerow(
                [
                    number,
                    "Alma University",
                    "Alma",
                    "normal",
                    f"Case {number} from the old help desk",
                    f"{number.lower()}@alma.example",
                    status,
                    since.isoformat(),
                    f"zendesk #{n}",
                ]
            )
    return counts


async def bare_phase(server: Any, workdir: Path, count: int, concurrency: int) -> dict[str, Any]:
    task_queue = f"bench-bare-import-{uuid.uuid4().hex[:6]}"
    client = server.client
    async with worker_process("bare", server, task_queue, workdir) as worker:
        banner(f"bare: {count} starts, {concurrency} at once")

        async def one(n: int) -> None:
            handle = await client.start_workflow(
                bare.BARE_CASE,
                [3600.0, 3600.0, 3600.0],
                id=f"{task_queue}-{n}",
                task_queue=task_queue,
            )
            await handle.query("timers_fired")

        async with measured(worker, server) as usage:
            await bounded(concurrency, (one(n) for n in range(count)))
        [u] = usage
    return phase("bare", count, u)


def phase(kind: str, count: int, u: Any, **more: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "cases": count,
        "wall_s": round(u.wall, 1),
        "cases_per_s": round(count / u.wall, 2),
        "worker_cpu_ms_per_case": round(u.worker_cpu / count * 1000, 2),
        "server_cpu_ms_per_case": round(u.server_cpu / count * 1000, 2),
        "load": round(load()[0], 2),
        **more,
    }


async def engine_phase(server: Any, workdir: Path, count: int, concurrency: int) -> dict[str, Any]:
    task_queue = f"bench-import-{uuid.uuid4().hex[:6]}"
    path = workdir / "backlog.csv"
    mix = export(path, task_queue.upper(), count, datetime.now(UTC))
    async with worker_process("engine", server, task_queue, workdir) as worker:
        banner(f"engine: python -m starter import of {count} rows, {concurrency} at once")
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_NAMESPACE": "default",
            "CASES_TASK_QUEUE": task_queue,
        }
        env.pop("TEMPORAL_PROFILE", None)
        command = [
            sys.executable,
            "-m",
            "starter",
            "import",
            str(path),
            "--concurrency",
            str(concurrency),
            "--json",
        ]
        async with measured(worker, server) as usage:
            done = await asyncio.to_thread(
                subprocess.run, command, env=env, capture_output=True, text=True
            )
        [u] = usage
    if done.returncode != 0:
        raise RuntimeError(f"import failed ({done.returncode}): {done.stdout[-2000:]}")
    return phase("engine", count, u, mix=mix, cli=done.stdout.strip()[-400:])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--name", default="moving-in")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        workdir = Path(tmp)
        async with dev_server() as server:
            phases = [
                await bare_phase(server, workdir, args.cases, args.concurrency),
                await engine_phase(server, workdir, args.cases, args.concurrency),
            ]
    bare_rate = phases[0]["cases_per_s"]
    for p in phases:
        p["ratio_to_bare"] = round(p["cases_per_s"] / bare_rate, 2)
    print()
    print(
        table(
            [
                "run",
                "cases",
                "wall s",
                "cases/s",
                "ratio to bare",
                "worker CPU ms/case",
                "server CPU ms/case",
                "load",
            ],
            [
                [
                    p["kind"],
                    p["cases"],
                    p["wall_s"],
                    p["cases_per_s"],
                    p["ratio_to_bare"],
                    p["worker_cpu_ms_per_case"],
                    p["server_cpu_ms_per_case"],
                    p["load"],
                ]
                for p in phases
            ],
        )
    )
    path = write_results(
        args.name,
        {
            "cases": args.cases,
            "concurrency": args.concurrency,
            "phases": phases,
            "took_s": round(time.monotonic() - started),
        },
    )
    print(f"\nwritten: {path.relative_to(Path.cwd())}")


if __name__ == "__main__":
    asyncio.run(main())
