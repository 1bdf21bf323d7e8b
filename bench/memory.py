"""Memory and history: the worker's RSS with 100, 1,000 and 10,000 open idle cases, and the
events per run of cases that live two years.

    .venv/bin/python -m bench.memory [--levels 100,1000,10000] [--kinds engine,bare] [--cap 1200]

RSS: one worker process per kind (the project's worker, ``engine``, as ``python worker.py``
runs it, real activities into a temp SQLite file; ``bare`` for reference) on a fresh in-memory
dev server; cases are opened in steps up to each level and stay open, idle (``New``: waiting for
people, no timer). At each level, once the worker is idle, its RSS (and USS) is read. The
workflow cache is the worker's own bound (``max_cached_workflows``, SDK default 1,000 unless
``--options`` says otherwise), so from 1,000 cases on, older cases are evicted and replayed when
they next wake.

History: on a time-skipping dev server (the test suite's), the project's worker in-process, two
cases live two years of calendar time, and every run of each (continue-as-new) is counted:

- ``quiet``: a defect parked in ``Pending Work Plan`` for its 24 months (8 quarterly
  reassessments), then ``Closing`` and ``Closed`` by its timers;
- ``busy``: every week for 104 weeks the customer is asked for information and answers 3 days
  later (``Pending Customer Response`` → ``Waiting for Process`` → ``Tier 1 Analysis``), then
  closed: 312 status changes, each with its persist and its emails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from bench import bare
from bench.common import (
    banner,
    bounded,
    dev_server,
    load,
    table,
    worker_process,
    write_results,
)
from runtime.connection import temporal_cli
from starter.client import CaseClient
from tests.scenario import CUSTOMER, DEV, TIER1, TIER2
from workflows import search
from workflows.contract import CaseInput, CustomerReply, Status, TransitionRequest

RPC_CONCURRENCY = 100
DAY = timedelta(days=1)


def idle_case(number: str) -> CaseInput:
    return CaseInput(
        case_number=number,
        institution="Alma University",
        product="Alma",
        priority="low",
        title="Report layout question",
        contact_email="ann@alma.example",
        opened_by=CUSTOMER,
    )


async def rss_levels(
    kind: str, levels: list[int], workdir: Path, cap: float, options: dict[str, Any]
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    task_queue = f"bench-mem-{kind}-{run}"
    rows: list[dict[str, Any]] = []
    async with (
        dev_server() as server,
        worker_process(kind, server, task_queue, workdir, options) as worker,
    ):
        cases = CaseClient(server.client, task_queue)
        await worker.quiesce()
        assert worker.process is not None
        rows.append({"open_cases": 0, **_memory(worker.process)})
        opened = 0
        started = time.monotonic()
        for level in levels:
            numbers = [f"M{run}-{i:05d}" for i in range(opened, level)]
            banner(f"{kind}: opening {len(numbers)} cases (to {level})")
            step = time.monotonic()
            if kind == "bare":
                jobs = [
                    server.client.start_workflow(
                        bare.BARE_DEADLINE, id=f"bare-{n}", task_queue=task_queue
                    )
                    for n in numbers
                ]
            else:
                jobs = [cases.open(idle_case(n)) for n in numbers]
            try:
                async with asyncio.timeout(max(1.0, cap - (time.monotonic() - started))):
                    await bounded(RPC_CONCURRENCY, jobs)
                    await worker.quiesce()
            except TimeoutError:
                # The cap: report how far it got rather than nothing.
                query = f'TaskQueue = "{task_queue}"'
                level = (await server.client.count_workflows(query)).count
                banner(f"{kind}: wall-clock cap reached at {level} open cases")
                rows.append({"open_cases": level, **_memory(worker.process), "capped": True})
                break
            opened = level
            rows.append(
                {
                    "open_cases": level,
                    **_memory(worker.process),
                    "load": load()[0],
                    "opened_in_s": round(time.monotonic() - step, 1),
                    **worker.troubles(),
                }
            )
            banner(f"{kind}: {level} open, RSS {rows[-1]['rss_mib']} MiB")
    return {"kind": kind, "options": options, "levels": rows}


def _memory(process: Any) -> dict[str, Any]:
    full = process.memory_full_info()
    return {"rss_mib": round(full.rss / 2**20, 1), "uss_mib": round(full.uss / 2**20, 1)}


# ---- two years of history -------------------------------------------------------------------


async def runs_of(client: Client, workflow_id: str) -> list[int]:
    """Events in each run of the workflow, oldest first."""
    counts = []
    executions = [e async for e in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    for execution in sorted(executions, key=lambda e: e.start_time):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        counts.append(len([e async for e in handle.fetch_history_events()]))
    return counts


async def two_years(workdir: Path) -> dict[str, Any]:
    from activities import CaseStore, upgrade
    from settings import Settings
    from worker import build_worker

    env = await WorkflowEnvironment.start_time_skipping_v2(
        ts_config=TimeSkippingConfig(enabled=False),
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search.ALL_KEYS,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
    )
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        task_queue=f"bench-2y-{run}",
        database_url=f"sqlite+aiosqlite:///{workdir / 'two-years.db'}",
        smtp_url=None,
    )
    await upgrade(settings.database_url)
    store = CaseStore(settings.database_url)
    out: dict[str, Any] = {}
    try:
        async with build_worker(env.client, settings, store):
            cases = CaseClient(env.client, settings.task_queue)

            async def forward(number: str, span: timedelta) -> None:
                await env.fast_forward(env.client.get_workflow_handle(f"case-{number}"), span)

            async def to(number: str, status: Status, actor: Any, **kw: Any) -> None:
                await cases.transition(number, TransitionRequest(to=status, actor=actor, **kw))

            quiet = f"Q{run}"
            banner("two years: quiet case (Pending Work Plan, 24 months)")
            await cases.open(idle_case(quiet))
            await to(quiet, Status.TIER1_ANALYSIS, TIER1)
            await cases.handoff(quiet, _handoff())
            for status, actor in (
                (Status.TIER2_ANALYSIS, TIER2),
                (Status.DEVELOPMENT, TIER2),
                (Status.PENDING_WORK_PLAN, DEV),
            ):
                await to(quiet, status, actor)
            for _ in range(25):  # month by month: reviews, expiry, Closing, Closed
                await forward(quiet, 31 * DAY)
                await asyncio.sleep(0.2)
            snap = await _result(cases, quiet)
            out["quiet"] = {
                "final_status": snap,
                "runs": await runs_of(env.client, f"case-{quiet}"),
            }

            busy = f"B{run}"
            banner("two years: busy case (weekly information requests, 104 weeks)")
            await cases.open(idle_case(busy))
            await to(busy, Status.TIER1_ANALYSIS, TIER1)
            for week in range(104):
                await to(busy, Status.PENDING_CUSTOMER_RESPONSE, TIER1, note=f"week {week}")
                await forward(busy, 3 * DAY)
                await cases.reply(busy, CustomerReply(text=f"answer {week}", actor=CUSTOMER))
                await to(busy, Status.TIER1_ANALYSIS, TIER1)
                await forward(busy, 4 * DAY)
            await to(busy, Status.CLOSING, TIER1)
            await forward(busy, 15 * DAY)
            await asyncio.sleep(0.5)
            snap = await _result(cases, busy)
            out["busy"] = {"final_status": snap, "runs": await runs_of(env.client, f"case-{busy}")}
    finally:
        await store.dispose()
        await env.shutdown()
    for name, data in out.items():
        runs = data["runs"]
        data["max_events_per_run"] = max(runs)
        banner(f"two years, {name}: {len(runs)} run(s), events {runs}")
    return out


def _handoff() -> Any:
    from workflows.contract import TierHandoff

    return TierHandoff(to_tier=2, reason="defect_verification", actor=TIER1)


async def _result(cases: CaseClient, number: str) -> str:
    for _ in range(50):
        snap = await cases.snapshot(number)
        if snap.status is Status.CLOSED:
            return str(snap.status)
        await asyncio.sleep(0.2)
    return str(snap.status)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="100,1000,10000")
    parser.add_argument("--kinds", default="engine,bare")
    parser.add_argument("--cap", type=float, default=1200.0, help="wall-clock cap per kind (s)")
    parser.add_argument("--options", default="{}", help="extra Worker options (JSON)")
    parser.add_argument("--skip-history", action="store_true")
    parser.add_argument("--name", default="memory")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    options = json.loads(args.options)
    results: dict[str, Any] = {"rss": [], "history": None}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for kind in args.kinds.split(","):
            results["rss"].append(await rss_levels(kind, levels, Path(tmp), args.cap, options))
        if not args.skip_history:
            results["history"] = await two_years(Path(tmp))
    print()
    rows = []
    for r in results["rss"]:
        first = next(x for x in r["levels"] if x["open_cases"] == levels[0])
        for x in r["levels"]:
            rows.append(
                (
                    r["kind"],
                    x["open_cases"],
                    x["rss_mib"],
                    x["uss_mib"],
                    round(x["rss_mib"] / first["rss_mib"], 2) if x["open_cases"] else "",
                )
            )
    print(table(["worker", "open idle cases", "RSS MiB", "USS MiB", f"x at {levels[0]}"], rows))
    if results["history"]:
        print()
        print(
            table(
                ["two-year case", "runs", "events per run", "max"],
                [
                    (name, len(d["runs"]), ", ".join(map(str, d["runs"])), d["max_events_per_run"])
                    for name, d in results["history"].items()
                ],
            )
        )
    path = write_results(args.name, {"levels": levels, **results})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    asyncio.run(main())
