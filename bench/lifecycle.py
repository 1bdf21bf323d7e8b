"""Lifecycle throughput: N cases through a full lifecycle, beside bare Temporal doing the same.

    .venv/bin/python -m bench.lifecycle [--cases 1000] [--rounds 1] [--cap 900]

One dev server; for each round, three phases one after another, each with a fresh worker
process on its own task queue:

- ``bare``: ``bench.bare.BareCase``, the same 9 signals, 3 timers and 20 activities per case
  with no logic and no-op activities;
- ``engine-noop``: ``SupportCase`` through ``worker.build_worker``, activities replaced by
  no-ops (the engine's own overhead against Temporal's);
- ``engine``: the project's worker as shipped, real activities: persist into SQLite (a temp
  file), notify into the outbox table (no SMTP URL), register with the ``Release`` workflow.

Each case: open (the project's ``CaseClient.open``) → ``Tier 1 Analysis`` → ``Pending Customer
Response`` (signals) → the 2 s reminder fires (the driver polls the ``snapshot`` query from 2 s
on, backing off from 0.5 s to 4 s, until the reminder has acted, so the reply never overtakes
it) → signals
``customer_reply`` → ``Tier 1 Analysis`` → ``tier_handoff`` to Tier 2 → ``Tier 2 Analysis`` →
``Development`` → ``Pending Release`` (release ``bench-…``) → ``release_shipped``, sent straight
to the case (the release fan-out has a bench of its own) → 2 s later ``Closing`` → 2 s later
``Closed``; the driver awaits the workflow's result. The bare case is driven the same way
(its ``timers_fired`` query stands in for the snapshot).

Throughput is cases / (first start → last result). CPU seconds of the worker and the server
process over the phase are reported too: they are less sensitive to the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from bench import bare
from bench.common import (
    Server,
    banner,
    bounded,
    dev_server,
    load,
    measured,
    policy_env,
    table,
    worker_process,
    write_results,
)
from starter.client import CaseClient
from tests.reliability.harness import case_input
from tests.scenario import CUSTOMER, TIER1, TIER2
from workflows.contract import (
    Actor,
    CustomerReply,
    DeadlineKind,
    DeadlinePolicy,
    ReleaseShipped,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
)

REMINDER_S = 2.0
DEMO_POLICY = DeadlinePolicy.model_validate(
    {
        "pcr_reminder": "2s",
        "pcr_closing": "1h",
        "closing_closed": "2s",
        "release_closing": "2s",
    }
)
BARE_SPANS = [REMINDER_S, 2.0, 2.0]  # the same three timers
POLL_EVERY = 0.5
POLL_MAX = 4.0
QUERIES_IN_FLIGHT = 32
QUERY_GATE = asyncio.Semaphore(QUERIES_IN_FLIGHT)
KINDS = ("bare", "engine-noop", "engine")


async def wait_reminder(check: Callable[[], Awaitable[bool]], polls: list[int]) -> None:
    """Poll from the reminder's instant on, backing off (0.5 s doubling to 4 s), at most
    ``QUERIES_IN_FLIGHT`` queries at once: a saturated worker answers queries late, and a
    query it does not answer in time counts as "not yet"."""
    await asyncio.sleep(REMINDER_S)
    delay = POLL_EVERY
    while True:
        try:
            async with QUERY_GATE:
                done = await check()
        except RPCError:
            done = False
        polls.append(1)
        if done:
            return
        await asyncio.sleep(delay)
        delay = min(2 * delay, POLL_MAX)


async def engine_case(cases: CaseClient, number: str, release_id: str, polls: list[int]) -> None:
    await cases.open(case_input(number, DEMO_POLICY))  # with a policy: tier1 opens it
    handle = cases.handle(number)

    async def move(to: Status, actor: Actor, **kw: Any) -> None:
        await handle.signal("transition", TransitionRequest(to=to, actor=actor, **kw))

    await move(Status.TIER1_ANALYSIS, TIER1)
    await move(Status.PENDING_CUSTOMER_RESPONSE, TIER1, note="please send the log")

    async def reminded() -> bool:
        snap = await handle.query("snapshot", result_type=Snapshot)
        due = snap.next_deadline
        return snap.status is not Status.PENDING_CUSTOMER_RESPONSE or (
            due is not None and due.action is not DeadlineKind.PCR_REMINDER
        )

    await wait_reminder(reminded, polls)
    await handle.signal("customer_reply", CustomerReply(text="Here is the log.", actor=CUSTOMER))
    await move(Status.TIER1_ANALYSIS, TIER1)
    await handle.signal(
        "tier_handoff", TierHandoff(to_tier=2, reason="defect_verification", actor=TIER1)
    )
    await move(Status.TIER2_ANALYSIS, TIER2)
    await move(Status.DEVELOPMENT, TIER2)
    await move(Status.PENDING_RELEASE, TIER2, release_id=release_id)  # the owner analyst
    await handle.signal(
        "release_shipped", ReleaseShipped(release_id=release_id, shipped_at=datetime.now(UTC))
    )
    result = await handle.result()
    if result.status is not Status.CLOSED:
        raise AssertionError(f"case {number} ended in {result.status}")


async def bare_case(client: Client, task_queue: str, number: str, polls: list[int]) -> None:
    handle = await client.start_workflow(
        bare.BARE_CASE, BARE_SPANS, id=f"bare-{number}", task_queue=task_queue, result_type=int
    )
    for name in ("tier1", "pcr"):
        await handle.signal(bare.BareCase.event, name)

    async def reminded() -> bool:
        return await handle.query(bare.BareCase.timers_fired) >= 1

    await wait_reminder(reminded, polls)
    for name in ("reply", "tier1", "handoff", "tier2", "development", "release", "shipped"):
        await handle.signal(bare.BareCase.event, name)
    fired = await handle.result()
    if fired != len(BARE_SPANS):
        raise AssertionError(f"bare case {number} fired {fired} timers")


async def history_events(client: Client, workflow_id: str) -> int:
    handle = client.get_workflow_handle(workflow_id)
    return len([e async for e in handle.fetch_history_events()])


async def phase(
    server: Server,
    kind: str,
    count: int,
    workdir: Path,
    cap: float,
    options: dict[str, Any],
    profile: Path | None = None,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    task_queue = f"bench-{kind}-{run}"
    client = server.client
    polls: list[int] = []
    env = policy_env(min(REMINDER_S, *BARE_SPANS))
    async with worker_process(kind, server, task_queue, workdir, options, env) as worker:
        numbers = [f"L{run}-{i:05d}" for i in range(count)]
        load_before = load()[0]
        banner(f"{kind}: {count} cases")
        spy = start_profiler(worker.popen.pid if worker.popen else 0, profile, kind)
        async with measured(worker, server) as usage:
            started = time.monotonic()
            if kind == "bare":
                jobs = [bare_case(client, task_queue, n, polls) for n in numbers]
            else:
                cases = CaseClient(client, task_queue)
                release = f"bench-{run}"
                jobs = [engine_case(cases, n, release, polls) for n in numbers]
            async with asyncio.timeout(cap):
                await bounded(count, jobs)
            wall = time.monotonic() - started
        stop_profiler(spy)
        sample = numbers[:: max(1, count // 10)][:10]
        prefix = "bare-" if kind == "bare" else "case-"
        events = [await history_events(client, prefix + n) for n in sample]
        troubles = worker.troubles()
    u = usage[0]
    return {
        "kind": kind,
        "cases": count,
        "wall_s": round(wall, 2),
        "cases_per_s": round(count / wall, 2),
        "worker_cpu_s": round(u.worker_cpu, 2),
        "server_cpu_s": round(u.server_cpu, 2),
        "worker_cpu_ms_per_case": round(1000 * u.worker_cpu / count, 2),
        "server_cpu_ms_per_case": round(1000 * u.server_cpu / count, 2),
        "reminder_polls_per_case": round(len(polls) / count, 2),
        "history_events_per_case": statistics.median(events),
        "load_before": load_before,
        "load_after": load()[0],
        **troubles,
    }


def start_profiler(pid: int, where: Path | None, kind: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the worker for the whole phase: collapsed stacks in ``where/kind.txt``."""
    if where is None:
        return None
    where.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            *(str(spy), "record", "--pid", str(pid), "--rate", "50", "--format", "raw"),
            *("--output", str(where / f"{kind}.txt"), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cap", type=float, default=900.0, help="wall-clock cap per phase (s)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--options", default="{}", help="extra Worker options (JSON), all kinds")
    parser.add_argument("--name", default="lifecycle", help="results file name")
    parser.add_argument("--profile", type=Path, help="py-spy each worker into this directory")
    args = parser.parse_args()

    options = json.loads(args.options)
    kinds = args.kinds.split(",")
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        async with dev_server() as server:
            banner(f"dev server on {server.address}; warm-up")
            await phase(server, "bare", min(50, args.cases), Path(tmp), args.cap, options)
            for _ in range(args.rounds):
                for kind in kinds:
                    phases.append(
                        await phase(
                            server, kind, args.cases, Path(tmp), args.cap, options, args.profile
                        )
                    )

    def rate(kind: str) -> float:
        rates = [p["cases_per_s"] for p in phases if p["kind"] == kind]
        return statistics.median(rates) if rates else float("nan")

    bare_rate = rate("bare")
    summary = {
        kind: {
            "cases_per_s": rate(kind),
            "ratio_to_bare": round(rate(kind) / bare_rate, 3),
        }
        for kind in kinds
    }
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
                "events/case",
                "load",
            ],
            [
                (
                    p["kind"],
                    p["cases"],
                    p["wall_s"],
                    p["cases_per_s"],
                    round(p["cases_per_s"] / bare_rate, 3),
                    p["worker_cpu_ms_per_case"],
                    p["server_cpu_ms_per_case"],
                    p["history_events_per_case"],
                    p["load_before"],
                )
                for p in phases
            ],
        )
    )
    path = write_results(
        args.name,
        {
            "cases": args.cases,
            "rounds": args.rounds,
            "options": options,
            "policy": DEMO_POLICY.model_dump(mode="json"),
            "bare_per_case": {
                "signals": bare.SIGNALS,
                "timers": bare.TIMERS,
                "activities": bare.ACTIVITIES,
            },
            "phases": phases,
            "summary": summary,
        },
    )
    print(f"\nwritten: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    asyncio.run(main())
