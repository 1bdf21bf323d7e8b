"""Where a cached case's memory goes: ``tracemalloc`` over an in-process worker.

    .venv/bin/python -m bench.memprofile [--cases 300] [--kind engine|bare|bare-same-job]
        [--options JSON]

One worker in this process (``engine``: ``worker.build_worker`` with the real activities on a
SQLite case store; ``bare``: ``bench.bare``'s ``BareDeadline``) on an in-memory dev server. A
first batch of cases warms the worker (imports, pools, first-run caches); a snapshot is taken;
then ``--cases`` more are placed as ``bench.scale`` places them (the same mix of waiting
statuses) and, once every one waits and the worker is idle, a second. The difference, per case,
is grouped by what allocated it (by default the allocating line's file: module bodies run by
an import, the SDK's workflow instance, pydantic, the project's workflow code; with
``MEMPROFILE_FRAMES=12`` the outermost frame that names a part, such as the sandbox's per-run
import, at the price of a worker too slow for its timeouts) and by file and line. RSS grows by
more than the traced heap: the rest is the SDK core's (Rust) state per cached run and the
allocator's slack. ``--no-trace`` measures RSS alone; ``--no-sandbox`` runs the workflows
unsandboxed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sqlite3
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench import bare
from bench.common import banner, bounded, dev_server, table, write_results
from bench.deadlines import wait_count
from bench.scale import Bare, BareSameJob, Engine, mix
from bench.worker_proc import share_case_modules

ROOT = str(Path(__file__).resolve().parent.parent) + "/"
WARM = 40  # cases placed before the first snapshot
# Frames kept per allocation. One (the allocating line) keeps the worker fast enough that its
# workflow tasks and local activities stay within their timeouts; more attributes each allocation
# to the outermost part that caused it, but slows a task past 10 s on two cores.
FRAMES = int(os.environ.get("MEMPROFILE_FRAMES", "1"))
# Cases placed at once: tracemalloc slows the worker several times over, and a task queued
# behind a hundred others would time out and be retried (its memory counted twice).
CONCURRENCY = 10

# (part, a path fragment of a frame that puts an allocation in that part), outermost wins.
PARTS = (
    ("sandbox: per-run import of workflow modules", "workflow_sandbox/_importer.py"),
    ("sandbox: per-run set-up", "workflow_sandbox/_in_sandbox.py"),
    ("sandbox: restrictions (proxies)", "workflow_sandbox/_restrictions.py"),
    ("SDK: workflow instance and activation", "temporalio/worker/_workflow_instance.py"),
    ("SDK: workflow worker", "temporalio/worker/_workflow.py"),
    ("SDK: payload conversion", "temporalio/converter.py"),
    ("SDK: activity worker", "temporalio/worker/_activity.py"),
    ("project: workflows", "/workflows/"),
    ("project: activities", "/activities/"),
    ("pydantic", "/pydantic"),
    ("sqlalchemy", "/sqlalchemy/"),
    ("grpc/client", "temporalio/client.py"),
    # With one frame: a module body run by an import (per workflow run: the sandbox's re-import).
    ("module bodies run by an import", "<frozen importlib._bootstrap>"),
)


def part_of(trace: tracemalloc.Traceback) -> str:
    frames = [f.filename for f in reversed(trace)]  # outermost first
    for filename in frames:
        for name, fragment in PARTS:
            if fragment in filename:
                return name
    return "other: " + (trace[0].filename.rsplit("/", 2)[-1] if len(trace) else "?")


def innermost(trace: tracemalloc.Traceback, root: str) -> str:
    for frame in trace:  # innermost first
        if frame.filename.startswith(root) and "/.venv/" not in frame.filename:
            return f"{frame.filename[len(root) :]}:{frame.lineno}"
    frame = trace[0]
    return f"{frame.filename.rsplit('/', 3)[-1]}:{frame.lineno}"


async def quiet(client: Client, kind: Any, want: Counter[Any], within: float) -> None:
    """Every case counted in its waiting status (engine) or running (bare), then no task
    pending for a while: the worker idle."""
    if isinstance(kind, Engine):
        await kind.placed(want, within)
    else:
        tq = kind.worker.task_queue
        await wait_count(client, f'TaskQueue = "{tq}"', sum(want.values()), within)
    me = psutil.Process()
    last = me.cpu_times()
    while True:
        await asyncio.sleep(2.0)
        now = me.cpu_times()
        if (now.user + now.system) - (last.user + last.system) < 0.1:
            return
        last = now


async def run(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = json.loads(args.options)
    workdir = Path(tempfile.mkdtemp(prefix="memprofile-"))
    async with dev_server() as server:
        client = server.client
        tq = f"memprofile-{uuid.uuid4().hex[:6]}"
        store = None
        if args.kind == "engine":
            import logs
            import worker as project_worker
            from activities import CaseStore, upgrade
            from settings import Settings

            url = f"sqlite+aiosqlite:///{workdir / 'cases.db'}"
            settings = Settings(
                task_queue=tq, database_url=url, smtp_url=None, workflow_sandbox=args.sandbox
            )
            logs.configure("json", "WARNING")
            await upgrade(url)
            store = CaseStore(url)
            if args.pass_case:
                share_case_modules()
            worker = project_worker.build_worker(client, settings, store, **options)
        else:
            if not args.sandbox:
                options["workflow_runner"] = UnsandboxedWorkflowRunner()
            worker = Worker(
                client,
                task_queue=tq,
                workflows=[bare.BareDeadline, bare.BarePlaced],
                activities=[bare.bare_effect],
                **options,
            )
        shim = SimpleNamespace(task_queue=tq, database_url="")
        run_id = uuid.uuid4().hex[:6]
        margs = SimpleNamespace(due=0, release_closing="5min")
        kinds = {"engine": Engine, "bare": Bare, "bare-same-job": BareSameJob}
        kind: Any = kinds[args.kind](server, shim, run_id, margs)  # type: ignore[arg-type]
        statuses = mix(WARM + args.cases, 0)
        me = psutil.Process()
        async with worker:
            if args.trace:
                tracemalloc.start(FRAMES)
            await bounded(CONCURRENCY, (kind.place(i, s) for i, s in enumerate(statuses[:WARM])))
            await quiet(client, kind, Counter(statuses[:WARM]), 300)
            gc.collect()
            before, rss0 = snapshot(args.trace), me.memory_info().rss
            banner(f"{args.kind}: {WARM} warm cases; placing {args.cases} more")
            started = time.monotonic()
            await bounded(
                CONCURRENCY,
                (kind.place(WARM + i, s) for i, s in enumerate(statuses[WARM:])),
            )
            await quiet(client, kind, Counter(statuses), 1800)
            gc.collect()
            after, rss1 = snapshot(args.trace), me.memory_info().rss
            took = time.monotonic() - started
            if args.trace:
                tracemalloc.stop()
            numbers = [f"S{run_id}-{i:05d}" for i in range(WARM + args.cases)]
            histories = await bounded(20, (history(client, kind.workflow_id(n)) for n in numbers))
        if store is not None:
            await store.dispose()
    case_store = store_per_case(workdir / "cases.db", len(numbers)) if store is not None else None
    shutil.rmtree(workdir, ignore_errors=True)
    diff = after.compare_to(before, "traceback") if after and before else []
    parts: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for stat in diff:
        parts[part_of(stat.traceback)] += stat.size_diff
        lines[innermost(stat.traceback, ROOT)] += stat.size_diff
    n = args.cases
    traced = sum(parts.values())
    events = [e for e, _ in histories]
    size = [b for _, b in histories]
    return {
        "kind": args.kind,
        "cases": n,
        "options": {k: repr(v) for k, v in options.items()},
        "sandbox": args.sandbox,
        "pass_case": args.pass_case,
        "traced": args.trace,
        "placed_in_s": round(took, 1),
        "rss_kib_per_case": round((rss1 - rss0) / 1024 / n, 1),
        "traced_kib_per_case": round(traced / 1024 / n, 1),
        "history_events_per_case": round(sum(events) / len(events), 1),
        "history_bytes_per_event": round(sum(size) / sum(events)),
        "mix": dict(Counter(str(x) for x in statuses)),
        "case_store": case_store,
        "parts_kib_per_case": {k: round(v / 1024 / n, 1) for k, v in parts.most_common()},
        "lines_kib_per_case": {k: round(v / 1024 / n, 2) for k, v in lines.most_common(args.top)},
    }


async def history(client: Client, workflow_id: str) -> tuple[int, int]:
    info = (await client.get_workflow_handle(workflow_id).describe()).raw_description
    return (
        info.workflow_execution_info.history_length,
        info.workflow_execution_info.history_size_bytes,
    )


def store_per_case(db: Path, cases: int) -> dict[str, Any]:
    """Rows and bytes (pages with their indexes, SQLite's ``dbstat``) per case, by table."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        pages = dict(
            conn.execute(
                "SELECT coalesce(i.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
                "LEFT JOIN sqlite_schema i ON i.name = d.name GROUP BY 1"
            ).fetchall()
        )
        rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    return {
        t: {"rows": round(rows[t] / cases, 2), "bytes": round(pages.get(t, 0) / cases)}
        for t in tables
        if rows[t]
    }


def snapshot(trace: bool) -> tracemalloc.Snapshot | None:
    return tracemalloc.take_snapshot() if trace else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--kind", choices=["engine", "bare", "bare-same-job"], default="engine")
    parser.add_argument("--options", default="{}", help="extra Worker keyword arguments (JSON)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--no-trace", dest="trace", action="store_false", help="RSS only, at full speed"
    )
    parser.add_argument(
        "--pass-case",
        action="store_true",
        help="the sandbox shares the case workflow's modules (not re-imported per run)",
    )
    parser.add_argument(
        "--no-sandbox", dest="sandbox", action="store_false", help="workflows unsandboxed"
    )
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(
        f"history: {result['history_events_per_case']} events per case, "
        f"{result['history_bytes_per_event']} bytes per event; case store: {result['case_store']}"
    )
    print(
        f"\nper cached case: RSS {result['rss_kib_per_case']} KiB, traced heap "
        f"{result['traced_kib_per_case']} KiB ({result['cases']} cases)"
    )
    print(table(["part", "KiB/case"], result["parts_kib_per_case"].items()))
    print(table(["allocated at", "KiB/case"], result["lines_kib_per_case"].items()))
    write_results(args.name or f"memprofile-{args.kind}", result)


if __name__ == "__main__":
    main()
