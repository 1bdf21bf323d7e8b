"""Deadline drain and lateness: 1,000 cases whose next deadline falls on the same instant.

    .venv/bin/python -m bench.deadlines [--cases 1000] [--lone 5] [--span 60] [--cap 900]

The only deadline whose start an outside system sets is Pending Release's: it counts from the
``shipped_at`` of ``release_shipped``. So each case is driven to ``Pending Release`` (signals:
``Tier 1 Analysis``, handoff to Tier 2, ``Tier 2 Analysis``, ``Development``, ``Pending
Release``), the worker is left to go idle, and then every case gets ``release_shipped`` with the
same ``shipped_at`` S: each one's ``release_closing`` deadline (``--span`` seconds, the case's
policy) falls due at exactly S + span, when all of them move to ``Closing`` (a persist and a
"closing" email each) and arm the 1 h ``closing_closed`` timer. The bare counterpart
(``bench.bare.BareDeadline``) is armed with the same instant by one signal and does the same
activities and timers.

Lateness of a case = the time of the first ``WorkflowTaskCompleted`` after its timer fired (the
case has acted: its decision is recorded) - the due instant, read from the workflow's history
(server clock; same machine as the driver). Drain = the latest of these. "Effects done" is the
last activity completed after the timer. The lone deadlines (``--lone``) are cases set up with
the others but shipped so that their deadlines fall one by one, 3 s apart, after the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench import bare
from bench.common import (
    Server,
    banner,
    bounded,
    dev_server,
    load,
    percentile,
    policy_env,
    table,
    worker_process,
    write_results,
)
from starter.client import CaseClient
from tests.reliability.harness import case_input
from tests.scenario import TIER1, TIER2
from workflows.contract import (
    DeadlinePolicy,
    ReleaseShipped,
    Status,
    TierHandoff,
    TransitionRequest,
)

KINDS = ("bare", "engine-noop", "engine")
RPC_CONCURRENCY = 100
LONE_GAP_S = 3.0


@dataclass
class Acted:
    due: datetime
    fired: datetime | None
    acted: datetime | None
    effects_done: datetime | None

    def lateness(self) -> float | None:
        return None if self.acted is None else (self.acted - self.due).total_seconds()


async def acted(client: Client, workflow_id: str, due: datetime) -> Acted:
    """When the workflow acted on the timer that fired last, from its history."""
    events = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
    fired_at = max(
        (i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED),
        default=None,
    )
    if fired_at is None:
        return Acted(due, None, None, None)
    done = None
    completed = None
    for e in events[fired_at + 1 :]:
        if completed is None and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            completed = e.event_time.ToDatetime(tzinfo=UTC)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = e.event_time.ToDatetime(tzinfo=UTC)
    return Acted(due, events[fired_at].event_time.ToDatetime(tzinfo=UTC), completed, done)


async def wait_count(client: Client, query: str, want: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (await client.count_workflows(query)).count < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {want} workflows match {query} after {within} s")
        await asyncio.sleep(0.5)


class Driver:
    """Sets up and arms one kind's workflows."""

    def __init__(self, kind: str, client: Client, task_queue: str, span: float) -> None:
        self.kind, self.client, self.task_queue, self.span = kind, client, task_queue, span
        self.release = f"bench-{task_queue}"

    def workflow_id(self, number: str) -> str:
        return f"bare-{number}" if self.kind == "bare" else f"case-{number}"

    async def setup(self, number: str) -> None:
        if self.kind == "bare":
            await self.client.start_workflow(
                bare.BARE_DEADLINE, id=self.workflow_id(number), task_queue=self.task_queue
            )
            return
        cases = CaseClient(self.client, self.task_queue)
        policy = DeadlinePolicy.model_validate(
            {"release_closing": f"{int(self.span)}s", "closing_closed": "1h"}
        )
        # With a policy: tier1 opens it (a customer's policy is not used).
        await cases.open(case_input(number, policy, priority="high", title="Patron sync stopped"))
        handle = cases.handle(number)
        for to, actor in ((Status.TIER1_ANALYSIS, TIER1),):
            await handle.signal("transition", TransitionRequest(to=to, actor=actor))
        await handle.signal("tier_handoff", TierHandoff(to_tier=2, reason="consult", actor=TIER1))
        for to, actor in ((Status.TIER2_ANALYSIS, TIER2), (Status.DEVELOPMENT, TIER2)):
            await handle.signal("transition", TransitionRequest(to=to, actor=actor))
        await handle.signal(
            "transition",
            TransitionRequest(to=Status.PENDING_RELEASE, actor=TIER2, release_id=self.release),
        )

    async def all_set_up(self, count: int, within: float) -> None:
        if self.kind == "bare":
            return
        query = f'TaskQueue = "{self.task_queue}" AND CaseStatus = "Pending Release"'
        await wait_count(self.client, query, count, within)

    async def arm(self, number: str, due: datetime) -> None:
        handle = self.client.get_workflow_handle(self.workflow_id(number))
        if self.kind == "bare":
            await handle.signal(bare.BareDeadline.arm, due.isoformat())
        else:
            shipped = due - timedelta(seconds=self.span)
            await handle.signal(
                "release_shipped", ReleaseShipped(release_id=self.release, shipped_at=shipped)
            )

    async def all_acted(self, count: int, due: datetime, within: float) -> None:
        """Wait until ``count`` of them have moved on (bare: by polling its histories)."""
        wait = max(0.0, (due - datetime.now(UTC)).total_seconds())
        await asyncio.sleep(wait)
        if self.kind != "bare":
            query = f'TaskQueue = "{self.task_queue}" AND CaseStatus = "Closing"'
            await wait_count(self.client, query, count, within)

    async def acted_all(self, numbers: list[str], due: datetime, within: float) -> list[Acted]:
        """Every workflow's ``Acted``, re-reading the histories of those that have not acted yet
        (a loaded server fires timers late) until all have, or ``within`` runs out."""
        found: dict[str, Acted] = {}
        deadline = time.monotonic() + within
        while True:
            todo = [n for n in numbers if n not in found]
            got = await bounded(
                RPC_CONCURRENCY, [acted(self.client, self.workflow_id(n), due) for n in todo]
            )
            found.update({n: a for n, a in zip(todo, got, strict=True) if a.acted is not None})
            if len(found) == len(numbers) or time.monotonic() > deadline:
                return [found.get(n, Acted(due, None, None, None)) for n in numbers]
            await asyncio.sleep(2.0)


async def phase(
    server: Server,
    kind: str,
    count: int,
    lone: int,
    span: float,
    workdir: Path,
    cap: float,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    task_queue = f"bench-dl-{kind}-{run}"
    async with worker_process(kind, server, task_queue, workdir, env=policy_env(span)) as worker:
        driver = Driver(kind, server.client, task_queue, span)
        numbers = [f"D{run}-{i:05d}" for i in range(count)]
        lonely = [f"D{run}-lone-{i}" for i in range(lone)]
        banner(f"{kind}: setting up {count} + {lone} lone")
        async with asyncio.timeout(cap):
            await bounded(RPC_CONCURRENCY, [driver.setup(n) for n in numbers + lonely])
            await driver.all_set_up(count + lone, cap)
            await worker.quiesce()
            load_at_due = load()[0]
            # Arm all: the same instant, far enough ahead for every signal to be handled first.
            due = datetime.now(UTC) + timedelta(seconds=span)
            armed = time.monotonic()
            await bounded(RPC_CONCURRENCY, [driver.arm(n, due) for n in numbers])
            armed_in = time.monotonic() - armed
            await worker.quiesce()
            margin = (due - datetime.now(UTC)).total_seconds()
            banner(f"{kind}: armed in {armed_in:.1f} s; idle {margin:.1f} s before the deadline")
            cpu0, scpu0 = worker.cpu(), server.cpu()
            await driver.all_acted(count, due, cap)
            drained = await driver.acted_all(numbers, due, cap)
            await worker.quiesce(idle=0.1, window=0.5)
            cpu, scpu = worker.cpu() - cpu0, server.cpu() - scpu0
            # The lone deadlines, one by one.
            lone_due = [
                datetime.now(UTC) + timedelta(seconds=5 + LONE_GAP_S * i) for i in range(lone)
            ]
            await asyncio.gather(*(driver.arm(n, d) for n, d in zip(lonely, lone_due, strict=True)))
            await asyncio.sleep(max(0.0, (lone_due[-1] - datetime.now(UTC)).total_seconds()) + 2)
            await worker.quiesce(idle=0.1, window=0.5)
            alone = [
                (await driver.acted_all([n], d, 60.0))[0]
                for n, d in zip(lonely, lone_due, strict=True)
            ]
        troubles = worker.troubles()
    return {
        **summarize(kind, count, drained, alone, margin, armed_in, cpu, scpu, load_at_due),
        **troubles,
    }


def summarize(
    kind: str,
    count: int,
    drained: list[Acted],
    alone: list[Acted],
    margin: float,
    armed_in: float,
    cpu: float,
    scpu: float,
    load_at_due: float,
) -> dict[str, Any]:
    late = [a.lateness() for a in drained]
    values = [x for x in late if x is not None]
    fired = [(a.fired - a.due).total_seconds() for a in drained if a.fired]
    effects = [(a.effects_done - a.due).total_seconds() for a in drained if a.effects_done]
    lone_late = [x for a in alone if (x := a.lateness()) is not None]
    return {
        "kind": kind,
        "cases": count,
        "acted": len(values),
        "idle_margin_before_due_s": round(margin, 2),
        "armed_in_s": round(armed_in, 2),
        "drain_s": round(max(values), 3) if values else None,
        "lateness_p50_s": round(percentile(values, 0.5), 3),
        "lateness_p99_s": round(percentile(values, 0.99), 3),
        "lateness_max_s": round(max(values), 3) if values else None,
        "timer_fired_max_s": round(max(fired), 3) if fired else None,
        "effects_done_max_s": round(max(effects), 3) if effects else None,
        "worker_cpu_s": round(cpu, 2),
        "server_cpu_s": round(scpu, 2),
        "lone_lateness_s": [round(x, 3) for x in lone_late],
        "lone_lateness_max_s": round(max(lone_late), 3) if lone_late else None,
        "lateness_s": [round(x, 4) for x in values],
        "load_at_due": load_at_due,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--lone", type=int, default=5)
    parser.add_argument("--span", type=float, default=60.0, help="release_closing, seconds")
    parser.add_argument("--cap", type=float, default=900.0, help="wall-clock cap per phase (s)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--name", default="deadlines")
    args = parser.parse_args()
    phases = []
    with tempfile.TemporaryDirectory(prefix="bench-deadlines-") as tmp:
        async with dev_server() as server:
            for kind in args.kinds.split(","):
                phases.append(
                    await phase(server, kind, args.cases, args.lone, args.span, Path(tmp), args.cap)
                )
    base = next((p for p in phases if p["kind"] == "bare"), None)
    print()
    print(
        table(
            [
                "run",
                "cases",
                "drain s",
                "x bare",
                "lateness p50 s",
                "p99 s",
                "max s",
                "effects done s",
                "lone max s",
                "worker CPU s",
                "load",
            ],
            [
                (
                    p["kind"],
                    p["cases"],
                    p["drain_s"],
                    round(p["drain_s"] / base["drain_s"], 2) if base else "",
                    p["lateness_p50_s"],
                    p["lateness_p99_s"],
                    p["lateness_max_s"],
                    p["effects_done_max_s"],
                    p["lone_lateness_max_s"],
                    p["worker_cpu_s"],
                    p["load_at_due"],
                )
                for p in phases
            ],
        )
    )
    path = write_results(
        args.name,
        {"cases": args.cases, "span_s": args.span, "lone": args.lone, "phases": phases},
    )
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    asyncio.run(main())
