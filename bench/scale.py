"""Scale: 20,000 open cases on one machine, beside bare Temporal holding as many workflows.

    .venv/bin/python -m bench.scale [--cases 20000] [--levels 100,1000,10000,20000]
        [--updates 500] [--warm 30] [--long 50] [--due 5000] [--release-closing 5min]
        [--cap-minutes 180] [--kinds bare,engine] [--name scale]

Each kind runs on a dev server of its own, started as ``make run`` starts it (persisted to a
SQLite file, here in a temp dir), with one worker process at default settings
(``bench.worker_proc``: ``engine`` is ``worker.build_worker`` as ``python worker.py`` runs it,
real activities into a SQLite case store; ``bare`` is ``bench.bare`` on a plain ``Worker``).

1. **Open cases.** ``--cases`` cases, opened by tier1 and driven by signals into the waiting
   statuses of a real backlog: 40 % ``Pending Customer Response`` (Tier 1 Analysis, then the
   request, by tier1), 20 % ``Pending Work Plan`` (handed to Tier 2 with a reason, Tier 2
   Analysis and Development by tier2, then Pending Work Plan by development; priority normal,
   one institution), 20 % ``Pending Release`` (the same to Development, then Pending Release by
   tier2, the owner tier's analyst, with a release that has not shipped) and 20 %
   ``Development``. ``--due`` of the Pending Release cases wait on one release (``--due`` above
   the 20 % share takes the difference from Pending Customer Response); they open with the
   policy ``release_closing = --release-closing``, the others with the defaults. At each of
   ``--levels``, once every case is in its status (visibility counts) and the worker is idle:
   the worker's RSS and USS, the server process's RSS and the SQLite file's size (with its
   ``-wal`` and ``-shm``), and the open rate (cases placed per second over the step). Bare:
   ``BareDeadline`` workflows started and not armed (waiting on a condition: no timer).
2. **Update latency.** The round trip of a ``transition`` update through
   ``starter.client.CaseClient.transition``, one at a time: *warm*, ``--warm`` cases just
   opened (in the worker's cache) moved back and forth between Development (tier2) and Tier 2
   Analysis (development); *evicted*, ``--long`` cases grown by signals to a history of
   ``LONG_EVENTS`` events (below the continue-as-new bound ``CASE_HISTORY_BOUND``), one update
   each right after the worker was restarted (not cached: its history replays), ``--long`` x
   rounds >= ``--updates``. Bare: ``BareUpdate``'s ``move`` update (one activity, as the
   case's persist), the same warm and evicted rounds.
3. **Deadlines at scale.** ``ship_now`` to the due release: every due case hears
   ``release_shipped`` (the release's fan-out) and its ``release_closing`` falls due at the ship
   instant + ``--release-closing``, when it moves to Closing. Lateness = ``at - due`` of its
   ``case_history`` row (the case store: ``due`` is the instant, ``at`` when the case acted);
   drain = the latest. Bare: ``--due`` of the waiting ``BareDeadline`` workflows armed with one
   instant (``--release-closing`` ahead), lateness read from their histories as
   ``bench.deadlines`` does.

``--cap-minutes`` bounds the whole run's wall-clock time: the bare phase runs first with at
most a third of it, the engine with the rest; a phase that reaches its cap stops there and the
report says how far it got.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import socket
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError

from bench import bare
from bench.common import (
    Server,
    WorkerProcess,
    banner,
    bounded,
    dev_server,
    load,
    percentile,
    table,
    write_results,
)
from bench.deadlines import Acted, Driver, wait_count
from bench.release_fanout import release_status, seen_by
from runtime.pollers import wait_for_poller
from starter.client import CaseClient
from tests.reliability.harness import case_input
from tests.scenario import DEV, TIER1, TIER2
from workflows.calendar import Span
from workflows.case import CASE_HISTORY_BOUND
from workflows.contract import (
    DeadlinePolicy,
    HandlerName,
    Status,
    TierHandoff,
    TransitionRequest,
)
from workflows.lifecycle.deadlines import ON_TIME

RPC_CONCURRENCY = 100
# The evicted cases' history when measured: well into a long run, below the continue-as-new
# bound, with room for one update per round.
LONG_EVENTS = int(CASE_HISTORY_BOUND * 0.8)
LONG_EVENTS_MAX = CASE_HISTORY_BOUND - 30
SIGNALS_PER_BATCH = 20  # transitions sent to one long case before looking at its length again
POLLER_WITHIN = 120.0
DRAIN_IDLE_S = 10.0  # a bare worker idle this long after the due instant has drained

PCR, PWP, PR, DEVEL = (
    Status.PENDING_CUSTOMER_RESPONSE,
    Status.PENDING_WORK_PLAN,
    Status.PENDING_RELEASE,
    Status.DEVELOPMENT,
)
WAITING = (PCR, PWP, PR, DEVEL)
SHARE = {PCR: 0.4, PWP: 0.2, PR: 0.2, DEVEL: 0.2}


class Capped(Exception):
    """The phase's wall-clock cap was reached during ``stage``."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


@dataclass
class Clock:
    """The phase's wall-clock budget."""

    until: float

    def left(self) -> float:
        return self.until - time.monotonic()

    async def within(self, stage: str, work: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(max(0.1, self.left())):
                return await work
        except TimeoutError:
            raise Capped(stage) from None


def mix(cases: int, due: int) -> list[Status]:
    """Each case's waiting status, shuffled (a fixed seed) so every level has the same mix."""
    pr = min(cases, max(round(cases * SHARE[PR]), due))
    rest = cases - pr
    pwp = min(rest, round(cases * SHARE[PWP]))
    dev = min(rest - pwp, round(cases * SHARE[DEVEL]))
    statuses = [PR] * pr + [PWP] * pwp + [DEVEL] * dev + [PCR] * (rest - pwp - dev)
    random.Random(20000).shuffle(statuses)
    return statuses


def memory(process: Any) -> dict[str, float]:
    full = process.memory_full_info()
    return {"rss_mib": round(full.rss / 2**20, 1), "uss_mib": round(full.uss / 2**20, 1)}


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def latency(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else None,
    }


async def timed(call: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def restart(worker: WorkerProcess, client: Client) -> None:
    """A new worker process on the same task queue (and case store), polling."""
    worker.stop()
    await worker.start()
    assert worker.popen is not None
    identity = f"{worker.popen.pid}@{socket.gethostname()}"
    if not await wait_for_poller(client, worker.task_queue, POLLER_WITHIN, identity=identity):
        raise RuntimeError(f"restarted worker {worker.kind} does not poll")
    await worker.quiesce()


# ---- the kinds ------------------------------------------------------------------------------


class Kind:
    """What differs between the engine and bare: how a workflow is started, moved and timed."""

    name = ""

    def __init__(self, server: Server, worker: WorkerProcess, run: str, args: Any) -> None:
        self.server, self.worker, self.run, self.args = server, worker, run, args
        self.client = server.client
        self.update_timeouts = 0  # placements whose last update timed out (``Engine.to``)

    async def place(self, index: int, status: Status) -> None:
        raise NotImplementedError

    async def placed(self, want: Counter[Status], within: float) -> None:
        return None

    async def open_mover(self, number: str) -> None:
        raise NotImplementedError

    def mover(self, number: str) -> Callable[[], Awaitable[Any]]:
        """One measured update of the workflow (alternating between two statuses)."""
        raise NotImplementedError

    async def grow(self, number: str, moves: int) -> None:
        raise NotImplementedError

    def workflow_id(self, number: str) -> str:
        raise NotImplementedError

    async def deadlines(self, numbers: list[str], clock: Clock) -> dict[str, Any]:
        raise NotImplementedError


class Engine(Kind):
    name = "engine"

    def __init__(self, server: Server, worker: WorkerProcess, run: str, args: Any) -> None:
        super().__init__(server, worker, run, args)
        self.cases = CaseClient(self.client, worker.task_queue)
        self.due_release = f"scale-due-{run}"
        self.later_release = f"scale-later-{run}"
        self.due_policy = DeadlinePolicy.model_validate({"release_closing": args.release_closing})
        self.due_numbers: list[str] = []
        self.at: dict[str, Status] = {}

    def workflow_id(self, number: str) -> str:
        return f"case-{number}"

    async def signal(self, number: str, name: str, event: Any) -> None:
        await self.cases.signal(number, name, event)

    async def to(
        self, number: str, status: Status, actor: Any, wait: bool = False, **kw: Any
    ) -> None:
        request = TransitionRequest(to=status, actor=actor, **kw)
        if not wait:
            await self.signal(number, HandlerName.TRANSITION, request)
            return
        try:  # an update: answered once the case has taken this step and those before it
            await self.cases.transition(number, request)
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            # Not accepted within the server's long poll (about a minute) on a loaded server; an
            # update the server admitted is still delivered, so wait for the status (counted).
            self.update_timeouts += 1
            while (await self.cases.snapshot(number)).status is not status:
                await asyncio.sleep(1.0)

    async def open(self, number: str, policy: DeadlinePolicy | None = None) -> None:
        # With a policy tier1 opens it (a customer's is not used), else the customer does.
        await self.cases.open(case_input(number, policy))

    async def to_development(self, number: str, wait: bool = False) -> None:
        await self.to(number, Status.TIER1_ANALYSIS, TIER1)
        handoff = TierHandoff(to_tier=2, reason="defect_verification", actor=TIER1)
        await self.signal(number, HandlerName.TIER_HANDOFF, handoff)
        await self.to(number, Status.TIER2_ANALYSIS, TIER2)
        await self.to(number, DEVEL, TIER2, wait=wait)

    async def place(self, index: int, status: Status) -> None:
        """Open one case and move it to ``status``: signals, the last step an update, so a
        placement ends when the case waits there. Cases in flight stay at ``RPC_CONCURRENCY``,
        well inside the worker's cache; with signals alone thousands were in flight at once
        and each of their tasks missed the cache (a replay, and the sandbox's re-import)."""
        number = f"S{self.run}-{index:05d}"
        due = status is PR and len(self.due_numbers) < self.args.due
        if due:
            self.due_numbers.append(number)
        await self.open(number, self.due_policy if due else None)
        if status is PCR:
            await self.to(number, Status.TIER1_ANALYSIS, TIER1)
            await self.to(number, PCR, TIER1, wait=True, note="please send the log")
            return
        await self.to_development(number, wait=status is DEVEL)
        if status is PWP:
            await self.to(number, PWP, DEV, wait=True)
        elif status is PR:
            release = self.due_release if due else self.later_release
            # The owner tier's analyst.
            await self.to(number, PR, TIER2, wait=True, release_id=release)

    async def placed(self, want: Counter[Status], within: float) -> None:
        tq = self.worker.task_queue
        for status, count in want.items():
            query = f'TaskQueue = "{tq}" AND CaseStatus = "{status}"'
            await wait_count(self.client, query, count, within)

    async def open_mover(self, number: str) -> None:
        await self.open(number)
        await self.to_development(number)
        self.at[number] = DEVEL

    def mover(self, number: str) -> Callable[[], Awaitable[Any]]:
        async def move() -> None:
            to, actor = (Status.TIER2_ANALYSIS, DEV) if self.at[number] is DEVEL else (DEVEL, TIER2)
            await self.cases.transition(number, TransitionRequest(to=to, actor=actor))
            self.at[number] = to

        return move

    async def grow(self, number: str, moves: int) -> None:
        for _ in range(moves):
            to, actor = (Status.TIER2_ANALYSIS, DEV) if self.at[number] is DEVEL else (DEVEL, TIER2)
            await self.to(number, to, actor)
            self.at[number] = to

    async def deadlines(self, numbers: list[str], clock: Clock) -> dict[str, Any]:
        count = len(self.due_numbers)
        span = Span.parse(self.args.release_closing).length().total_seconds()
        banner(f"engine: ship_now to {self.due_release} ({count} cases due)")
        await self.cases.ship_now(self.due_release)
        status = None
        while status is None or status.shipped_at is None:
            await asyncio.sleep(0.5)
            status = await release_status(self.client, self.due_release)
        due = status.shipped_at + timedelta(seconds=span)
        heard = await clock.within(
            "deadlines: release_shipped heard",
            _until(seen_by(self.client, self.due_release, count)),
        )
        await clock.within("deadlines: idle before due", self.worker.quiesce())
        margin = (due - datetime.now(UTC)).total_seconds()
        banner(f"engine: every due case heard in {heard:.1f} s; idle {margin:.1f} s before due")
        cpu0, scpu0, load_at_due = self.worker.cpu(), self.server.cpu(), load()[0]
        db = Path(self.worker.database_url.split("///", 1)[1])

        async def recorded() -> bool:
            return len(await asyncio.to_thread(_closing_rows, db)) >= count

        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        await clock.within("deadlines: drain", _until(recorded, every=1.0))
        # The store's ``at`` is the due instant itself for a move within ON_TIME of it (the
        # guide's chain keeps exact instants), so when each case acted is read from its history.
        driver = Driver("engine", self.client, self.worker.task_queue, span)
        acted = await clock.within(
            "deadlines: histories", driver.acted_all(self.due_numbers, due, clock.left())
        )
        rows = await asyncio.to_thread(_closing_rows, db)
        stored = [(at - row_due).total_seconds() for row_due, at in rows]
        await clock.within("deadlines: effects", self.worker.quiesce())
        return {
            **_drain(acted, count, margin, cpu0, scpu0, load_at_due, self),
            "heard_in_s": round(heard, 1),
            "store_rows": len(rows),
            "store_due_instants": len({row_due for row_due, _ in rows}),
            "store_due_matches": all(row_due == due for row_due, _ in rows),
            f"store_later_than_on_time_{ON_TIME.seconds}s": sum(x > 0 for x in stored),
            "store_lateness_max_s": round(max(stored), 3) if stored else None,
        }


def _drain(
    acted: list[Acted],
    due: int,
    margin: float,
    cpu0: float,
    scpu0: float,
    load_at_due: float,
    kind: Kind,
) -> dict[str, Any]:
    late = [x for a in acted if (x := a.lateness()) is not None]
    fired = [(a.fired - a.due).total_seconds() for a in acted if a.fired]
    return {
        "due": due,
        "acted": len(late),
        "release_closing": kind.args.release_closing,
        "idle_margin_before_due_s": round(margin, 2),
        "drain_s": round(max(late), 3) if late else None,
        "lateness_p50_s": round(percentile(late, 0.5), 3),
        "lateness_p99_s": round(percentile(late, 0.99), 3),
        "timer_fired_max_s": round(max(fired), 3) if fired else None,
        "worker_cpu_s": round(kind.worker.cpu() - cpu0, 2),
        "server_cpu_s": round(kind.server.cpu() - scpu0, 2),
        "load_at_due": load_at_due,
    }


def _closing_rows(db: Path) -> list[tuple[datetime, datetime]]:
    """(due, at) of every deadline move Pending Release -> Closing in the case store."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT due, at FROM case_history WHERE from_status = ? AND to_status = ? "
            "AND due IS NOT NULL",
            (str(PR), str(Status.CLOSING)),
        ).fetchall()
    return [(_utc(due), _utc(at)) for due, at in rows]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def _until(check: Callable[[], Awaitable[bool]], every: float = 0.5) -> float:
    started = time.monotonic()
    while not await check():
        await asyncio.sleep(every)
    return time.monotonic() - started


class Bare(Kind):
    name = "bare"

    def workflow_id(self, number: str) -> str:
        return f"bare-{number}"

    async def place(self, index: int, status: Status) -> None:
        await self.client.start_workflow(
            bare.BARE_DEADLINE,
            id=self.workflow_id(f"S{self.run}-{index:05d}"),
            task_queue=self.worker.task_queue,
        )

    async def open_mover(self, number: str) -> None:
        await self.client.start_workflow(
            bare.BARE_UPDATE, id=self.workflow_id(number), task_queue=self.worker.task_queue
        )

    def mover(self, number: str) -> Callable[[], Awaitable[Any]]:
        handle = self.client.get_workflow_handle(self.workflow_id(number))
        return lambda: handle.execute_update(bare.BareUpdate.move, "move")

    async def grow(self, number: str, moves: int) -> None:
        handle = self.client.get_workflow_handle(self.workflow_id(number))
        for _ in range(moves):
            await handle.signal(bare.BareUpdate.event, "move")

    async def deadlines(self, numbers: list[str], clock: Clock) -> dict[str, Any]:
        span = Span.parse(self.args.release_closing).length().total_seconds()
        driver = Driver("bare", self.client, self.worker.task_queue, span)
        due = datetime.now(UTC) + timedelta(seconds=span)
        banner(f"bare: arming {len(numbers)} BareDeadline for one instant")
        await clock.within(
            "deadlines: arm", bounded(RPC_CONCURRENCY, [driver.arm(n, due) for n in numbers])
        )
        await clock.within("deadlines: idle before due", self.worker.quiesce())
        margin = (due - datetime.now(UTC)).total_seconds()
        cpu0, scpu0, load_at_due = self.worker.cpu(), self.server.cpu(), load()[0]
        await asyncio.sleep(max(0.0, margin))
        # Bare workflows record nothing but their histories; reading 5,000 of them every 2 s
        # while they drain loaded the server and slowed the drain it measured (2026-12-01). So
        # wait for the worker to stay idle for a while, then read them (again only for any that
        # had not acted yet).
        await clock.within(
            "deadlines: drain", self.worker.quiesce(window=DRAIN_IDLE_S, within=clock.left())
        )
        acted = await clock.within(
            "deadlines: drain", driver.acted_all(numbers, due, max(1.0, clock.left()))
        )
        return _drain(acted, len(numbers), margin, cpu0, scpu0, load_at_due, self)


# The activities of each step of a placement, as the engine's case runs them (its opening: a
# record and an email; a move: a record, plus the email or the registration the case sends).
SAME_JOB_STEPS = {
    PCR: [2, 1, 2],
    DEVEL: [2, 1, 1, 1, 1],
    PWP: [2, 1, 1, 1, 1, 1],
    PR: [2, 1, 1, 1, 1, 3],
}


class BareSameJob(Bare):
    """Bare Temporal doing a placement's job: ``BarePlaced`` started with the activities of
    each step, one signal per move, the last move an update, as ``Engine.place`` does."""

    name = "bare-same-job"

    async def place(self, index: int, status: Status) -> None:
        steps = SAME_JOB_STEPS[status]
        handle = await self.client.start_workflow(
            bare.BARE_PLACED,
            steps,
            id=self.workflow_id(f"S{self.run}-{index:05d}"),
            task_queue=self.worker.task_queue,
        )
        for _ in steps[1:-1]:
            await handle.signal(bare.BarePlaced.event, "move")
        await handle.execute_update(bare.BarePlaced.move, steps[-1])


# ---- the three measures ---------------------------------------------------------------------


async def open_levels(
    kind: Kind,
    statuses: list[Status],
    levels: list[int],
    db: Path,
    clock: Clock,
    out: dict[str, Any],
    save: Callable[[], None],
) -> None:
    worker, server = kind.worker, kind.server
    assert worker.process is not None and server.process is not None
    rows: list[dict[str, Any]] = out["levels"]
    base_server = server.process.memory_info().rss

    def level_row(count: int, seconds: float | None) -> dict[str, Any]:
        assert worker.process is not None and server.process is not None
        size = db_bytes(db)
        server_rss = server.process.memory_info().rss
        return {
            "open_cases": count,
            **memory(worker.process),
            "server_rss_mib": round(server_rss / 2**20, 1),
            "server_rss_kib_per_case": round((server_rss - base_server) / 1024 / count, 1)
            if count
            else None,
            "db_mib": round(size / 2**20, 1),
            "db_kib_per_case": round(size / 1024 / count, 1) if count else None,
            "opened_in_s": round(seconds, 1) if seconds is not None else None,
            "open_rate": round(count_step / seconds, 2) if seconds else None,
            "load": load()[0],
            "update_rpc_timeouts": kind.update_timeouts,
            **worker.troubles(),
        }

    count_step = 0
    rows.append(level_row(0, None))
    opened = 0
    for level in levels:
        count_step = level - opened
        banner(f"{kind.name}: opening {count_step} cases (to {level})")
        step = time.monotonic()
        jobs = [kind.place(i, statuses[i]) for i in range(opened, level)]
        try:
            await clock.within(f"open to {level}", bounded(RPC_CONCURRENCY, jobs))
            await clock.within(
                f"open to {level}", kind.placed(Counter(statuses[:level]), clock.left())
            )
            await clock.within(f"open to {level}", worker.quiesce(within=max(1.0, clock.left())))
        except Capped:
            query = f'TaskQueue = "{worker.task_queue}"'
            reached = (await kind.client.count_workflows(query)).count
            banner(f"{kind.name}: wall-clock cap reached at {reached} open workflows")
            rows.append({**level_row(reached, None), "capped": True})
            raise
        opened = level
        rows.append(level_row(level, time.monotonic() - step))
        save()
        banner(
            f"{kind.name}: {level} open, worker RSS {rows[-1]['rss_mib']} MiB, server RSS "
            f"{rows[-1]['server_rss_mib']} MiB, db {rows[-1]['db_mib']} MiB"
        )


async def update_latency(kind: Kind, clock: Clock, out: dict[str, Any]) -> None:
    args = kind.args
    warm = [f"W{kind.run}-{i:03d}" for i in range(max(1, args.warm))]
    long = [f"K{kind.run}-{i:03d}" for i in range(max(1, min(args.long, args.updates)))]
    rounds = math.ceil(args.updates / len(long))
    banner(f"{kind.name}: {len(warm)} warm and {len(long)} long workflows")
    await clock.within(
        "updates: open", bounded(RPC_CONCURRENCY, [kind.open_mover(n) for n in warm + long])
    )
    await clock.within("updates: open", kind.worker.quiesce())
    # Warm: cases just touched, one update at a time.
    moves = [kind.mover(warm[i % len(warm)]) for i in range(args.updates)]
    warm_s = await clock.within("updates: warm", _one_by_one(moves))
    out["updates"]["warm"] = {**latency(warm_s), "workflows": len(warm)}
    banner(f"{kind.name}: warm {out['updates']['warm']}")
    # Evicted: histories grown to LONG_EVENTS, measured right after a restart.
    lengths = await clock.within("updates: grow", _grow(kind, long))
    evicted: list[float] = []
    for r in range(rounds):
        if len(evicted) >= args.updates:
            break
        await clock.within("updates: restart", restart(kind.worker, kind.client))
        todo = long[: args.updates - len(evicted)]
        evicted += await clock.within(
            "updates: evicted", _one_by_one([kind.mover(n) for n in todo])
        )
        banner(f"{kind.name}: evicted round {r + 1}/{rounds}: {len(evicted)} updates")
    after = await _lengths(kind, long)
    if max(after) > LONG_EVENTS_MAX or min(after) < min(lengths):
        banner(f"{kind.name}: histories left the measured range (or continued as new): {after}")
    out["updates"]["evicted"] = {
        **latency(evicted),
        "workflows": len(long),
        "rounds": rounds,
        "history_events_before": [min(lengths), max(lengths)],
        "history_events_after": [min(after), max(after)],
    }
    banner(f"{kind.name}: evicted {out['updates']['evicted']}")


async def _one_by_one(moves: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    return [await timed(move()) for move in moves]


async def _lengths(kind: Kind, numbers: list[str]) -> list[int]:
    async def length(number: str) -> int:
        desc = await kind.client.get_workflow_handle(kind.workflow_id(number)).describe()
        return int(desc.raw_description.workflow_execution_info.history_length)

    return list(await bounded(RPC_CONCURRENCY, [length(n) for n in numbers]))


async def _grow(kind: Kind, numbers: list[str]) -> list[int]:
    """Move each workflow by signals until its history holds about LONG_EVENTS events: in
    batches, the last one sized by the events a move has cost so far."""
    per_move = 10.0
    lengths = await _lengths(kind, numbers)
    while True:
        short = [(n, x) for n, x in zip(numbers, lengths, strict=True) if x < LONG_EVENTS]
        if not short:
            return lengths
        banner(f"{kind.name}: growing {len(short)} histories (shortest {min(x for _, x in short)})")
        plan = {
            n: max(2, min(SIGNALS_PER_BATCH, int((LONG_EVENTS - x) / per_move) + 1))
            for n, x in short
        }
        before = dict(short)
        await bounded(RPC_CONCURRENCY, [kind.grow(n, m) for n, m in plan.items()])
        await kind.worker.quiesce()
        lengths = await _lengths(kind, numbers)
        grown = [
            (dict(zip(numbers, lengths, strict=True))[n] - before[n]) / m for n, m in plan.items()
        ]
        per_move = max(1.0, sum(grown) / len(grown))


async def run_kind(
    name: str,
    args: Any,
    levels: list[int],
    workdir: Path,
    cap_s: float,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """One kind's run; ``save(out)`` writes what it measured so far (after each level and
    stage: a run of hours that is stopped keeps its figures)."""
    run = uuid.uuid4().hex[:6]
    task_queue = f"bench-scale-{name}-{run}"
    db = workdir / name / "temporal.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    clock = Clock(time.monotonic() + cap_s)
    out: dict[str, Any] = {
        "kind": name,
        "levels": [],
        "updates": {},
        "deadlines": None,
        "capped": None,
    }
    async with dev_server(db_file=db) as server:
        worker_kind = "bare" if name.startswith("bare") else name
        worker = WorkerProcess(worker_kind, server.address, task_queue, workdir)
        await worker.start()
        kinds: dict[str, type[Kind]] = {
            "engine": Engine,
            "bare": Bare,
            "bare-same-job": BareSameJob,
        }
        kind = kinds[name](server, worker, run, args)
        statuses = mix(args.cases, args.due)
        out["mix"] = {str(s): statuses.count(s) for s in WAITING}
        try:
            await clock.within("start", worker.quiesce())
            await open_levels(kind, statuses, levels, db, clock, out, lambda: save(out))
            await update_latency(kind, clock, out)
            save(out)
            due = [f"S{run}-{i:05d}" for i in range(args.cases)][: args.due]
            out["deadlines"] = await kind.deadlines(due, clock)
            banner(f"{name}: deadlines {out['deadlines']}")
        except Capped as capped:
            out["capped"] = capped.stage
            banner(f"{name}: wall-clock cap reached during {capped.stage}")
        finally:
            out.update(worker.troubles())
            worker.stop()
    return out


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(
        table(
            [
                "worker",
                "open cases",
                "open rate /s",
                "worker RSS MiB",
                "USS MiB",
                "x at first",
                "server RSS MiB",
                "server KiB/case",
                "db MiB",
                "db KiB/case",
            ],
            [
                (
                    r["kind"],
                    f"{x['open_cases']:,}" + (" (cap)" if x.get("capped") else ""),
                    x["open_rate"] if x["open_rate"] is not None else "",
                    x["rss_mib"],
                    x["uss_mib"],
                    round(x["rss_mib"] / r["levels"][1]["rss_mib"], 2)
                    if len(r["levels"]) > 1 and x["open_cases"]
                    else "",
                    x["server_rss_mib"],
                    x["server_rss_kib_per_case"]
                    if x["server_rss_kib_per_case"] is not None
                    else "",
                    x["db_mib"],
                    x["db_kib_per_case"] if x["db_kib_per_case"] is not None else "",
                )
                for r in results
                for x in r["levels"]
            ],
        )
    )
    print()
    rows = []
    for r in results:
        for which in ("warm", "evicted"):
            u = r["updates"].get(which)
            if u:
                before, after = u.get("history_events_before"), u.get("history_events_after")
                rows.append(
                    (
                        r["kind"],
                        which,
                        u["count"],
                        u["p50_ms"],
                        u["p99_ms"],
                        u["max_ms"],
                        f"{before[0]}-{before[1]} -> {after[0]}-{after[1]}" if before else "",
                    )
                )
    print(table(["worker", "update", "n", "p50 ms", "p99 ms", "max ms", "history events"], rows))
    print()
    print(
        table(
            [
                "worker",
                "due",
                "acted",
                "drain s",
                "lateness p50 s",
                "p99 s",
                "timers fired by s",
                "idle margin s",
                "worker CPU s",
                "load",
            ],
            [
                (
                    r["kind"],
                    d["due"],
                    d["acted"],
                    d["drain_s"],
                    d["lateness_p50_s"],
                    d["lateness_p99_s"],
                    d["timer_fired_max_s"],
                    d["idle_margin_before_due_s"],
                    d["worker_cpu_s"],
                    d["load_at_due"],
                )
                for r in results
                if (d := r["deadlines"])
            ],
        )
    )
    for r in results:
        if r["capped"]:
            print(f"\n{r['kind']}: wall-clock cap reached during {r['capped']}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--levels", default="100,1000,10000,20000", help="capped by --cases")
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--warm", type=int, default=30, help="cases the warm updates cycle over")
    parser.add_argument("--long", type=int, default=50, help="long cases per evicted round")
    parser.add_argument("--due", type=int, default=5_000)
    parser.add_argument("--release-closing", default="5min", help="the due cases' policy span")
    parser.add_argument("--cap-minutes", type=float, default=180.0)
    parser.add_argument("--kinds", default="bare,engine")
    parser.add_argument("--name", default="scale")
    args = parser.parse_args()
    levels = sorted({min(int(x), args.cases) for x in args.levels.split(",")})
    args.due = min(args.due, args.cases)
    kinds = args.kinds.split(",")
    cap = args.cap_minutes * 60
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    header = {
        "cases": args.cases,
        "levels": levels,
        "updates": args.updates,
        "due": args.due,
        "release_closing": args.release_closing,
        "cap_minutes": args.cap_minutes,
        "long_events": [LONG_EVENTS, LONG_EVENTS_MAX, CASE_HISTORY_BOUND],
    }
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for name in kinds:
            left = cap - (time.monotonic() - started)
            share = left / 3 if name.startswith("bare") and len(kinds) > 1 else left

            def save(partial: dict[str, Any]) -> None:
                write_results(args.name, {**header, "runs": [*results, partial]})

            results.append(await run_kind(name, args, levels, Path(tmp), share, save))
            write_results(args.name, {**header, "runs": results})
    report(results)
    path = write_results(args.name, {**header, "runs": results})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    asyncio.run(main())
