"""The soak: random traffic and random faults for a while, then the check against the model.

    python -m tests.soak --minutes 30 --seed 7 --store postgresql

Timeline (of ``--minutes``): cases open over the first 70 %, each sends its scripted events; the
faults strike from 5 % to 85 %; at 100 % the traffic stops, every fault is over, and the system
gets up to ``--settle`` seconds to finish what is due. Then every case's histories are replayed
through the pure core (``tests.soak.oracle``) and compared with the SMTP sink and the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities import upgrade
from activities.store import CaseStore
from starter.client import CaseClient, CaseRejected
from tests.conftest import POSTGRES_ADMIN_URL, Inbox, PostgresDatabases, free_port
from tests.reliability.harness import message_ids
from tests.reliability.tcp_proxy import TcpProxy
from tests.soak import faults, traffic
from tests.soak.oracle import Replayed, replay, run_histories
from workflows import lifecycle
from workflows.contract import ReleaseInput, Status, case_workflow_id

# A case whose next deadline is further than this is waiting for people (a customer's case on
# the default policy of weeks): settled, as far as the soak can see.
FAR = timedelta(minutes=30)


@dataclass
class Counts:
    sent: Counter[str] = field(default_factory=Counter)  # by intent and path
    send_errors: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    shipped: list[str] = field(default_factory=list)


@dataclass
class Soak:
    seed: int
    minutes: float
    store_kind: str
    cases: int
    settle: float
    keep: bool
    workdir: Path = field(init=False)
    counts: Counts = field(default_factory=Counts)
    run_ids: dict[str, str] = field(default_factory=dict)  # case number -> opening run
    outbox_in_doubt: int = 0  # sends the outbox recorded as resent in doubt

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"soak-{self.seed}-"))

    @property
    def seconds(self) -> float:
        return self.minutes * 60


async def connect(address: str) -> Client:
    return await Client.connect(address, data_converter=pydantic_data_converter)


async def retrying(what: str, call: Any, counts: Counts, until: float) -> Any:
    """``call()`` until it answers or ``until`` (monotonic) passes; outages are expected."""
    delay = 0.5
    while True:
        try:
            return await asyncio.wait_for(call(), 30)
        except (RPCError, TimeoutError) as err:
            if isinstance(err, RPCError) and err.status is RPCStatusCode.NOT_FOUND:
                raise
            counts.send_errors[f"{what}: {type(err).__name__}"] += 1
            if time.monotonic() + delay > until:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def drive(
    soak: Soak, client: Client, task_queue: str, script: traffic.Script, t0: float, until: float
) -> None:
    cases = CaseClient(client, task_queue)
    await asyncio.sleep(max(0.0, t0 + script.open_at - time.monotonic()))

    async def open_case() -> str:
        try:
            handle = await cases.open(script.case)
            return handle.first_execution_run_id or handle.result_run_id or ""
        except CaseRejected as rejected:  # a retry of a start that went through
            if rejected.reason != "duplicate":
                raise
            desc = await cases.handle(script.number).describe()
            return desc.run_id or ""

    try:
        soak.run_ids[script.number] = await retrying("open", open_case, soak.counts, until)
    except (RPCError, TimeoutError, WorkflowAlreadyStartedError) as err:
        soak.counts.send_errors[f"open failed: {type(err).__name__}"] += 1
        return
    soak.counts.opened += 1
    for step in script.steps:
        await asyncio.sleep(max(0.0, t0 + step.at - time.monotonic()))
        if time.monotonic() > until:
            return
        name = traffic.SIGNAL_NAMES[type(step.event)]
        handle = cases.handle(script.number)

        async def send(step: traffic.Step = step, name: str = name, handle: Any = handle) -> None:
            if step.via == "signal":
                await handle.signal(name, step.event)
            else:
                with contextlib.suppress(CaseRejected):
                    await cases._update(script.number, name, step.event)

        try:
            await retrying(step.via, send, soak.counts, until)
            soak.counts.sent[f"{step.intent} via {step.via}"] += 1
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                soak.counts.sent["after the case closed (not sent)"] += 1
                return  # the case completed: no more events for it
            soak.counts.send_errors[f"{step.via} gave up: {err.status}"] += 1
        except TimeoutError:
            soak.counts.send_errors[f"{step.via} gave up: timeout"] += 1
        except Exception as err:  # an update the workflow failed: a finding, counted
            soak.counts.send_errors[f"{step.via}: {type(err).__name__}: {err}"[:200]] += 1


async def ship(
    soak: Soak, client: Client, task_queue: str, release: traffic.Release, t0: float, until: float
) -> None:
    cases = CaseClient(client, task_queue)
    await asyncio.sleep(max(0.0, t0 + release.ship_at - time.monotonic()))

    async def create() -> None:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await cases.schedule_release(ReleaseInput(release_id=release.release_id))

    async def ship_now() -> None:
        await cases.ship_now(release.release_id)

    try:
        await retrying("release", create, soak.counts, until)
        await retrying("ship", ship_now, soak.counts, until)
        soak.counts.shipped.append(release.release_id)
    except (RPCError, TimeoutError) as err:
        soak.counts.send_errors[f"ship gave up: {type(err).__name__}"] += 1


async def strike_all(rig: faults.Rig, schedule: list[faults.Fault], t0: float) -> Counter[str]:
    done: Counter[str] = Counter()

    async def one(fault: faults.Fault) -> None:
        await asyncio.sleep(max(0.0, t0 + fault.at - time.monotonic()))
        await rig.strike(fault)
        done[fault.kind] += 1

    await asyncio.gather(*(one(f) for f in schedule))
    return done


async def watch_workers(rig: faults.Rig) -> None:
    while True:
        rig.ensure_workers()
        await asyncio.sleep(2)


# ---- the check -----------------------------------------------------------------------------


@dataclass
class Verdict:
    case_number: str
    replayed: Replayed
    missing: list[str] = field(default_factory=list)
    unexplained_duplicates: list[str] = field(default_factory=list)
    wrong_rows: str = ""
    wrong_policy_rows: str = ""
    stuck: str = ""
    snapshot: str = ""

    @property
    def settled(self) -> bool:
        return not (self.missing or self.wrong_rows or self.stuck or self.wrong_policy_rows)


async def judge(
    client: Client,
    store: CaseStore,
    number: str,
    first_run_id: str,
    received: Counter[str],
    doubtful: dict[str, int],
    shipped: list[str],
    with_snapshot: bool,
) -> Verdict:
    runs = await run_histories(client, number, first_run_id)
    replayed = replay(number, runs, traffic.SETTINGS)
    verdict = Verdict(number, replayed)
    verdict.missing = [m for m in replayed.message_ids if received[m] == 0]
    verdict.unexplained_duplicates = [
        m for m in set(replayed.message_ids) if received[m] - 1 > doubtful.get(m, 0)
    ]
    rows = [h.seq for h in await store.history(number)]
    if rows != replayed.history_seqs:
        verdict.wrong_rows = f"rows {rows} != expected {replayed.history_seqs}"
    policy_rows = [p.seq for p in await store.policy_changes(number)]
    if policy_rows != replayed.policy_seqs:
        verdict.wrong_policy_rows = f"policy rows {policy_rows} != {replayed.policy_seqs}"
    desc = await client.get_workflow_handle(case_workflow_id(number)).describe()
    raw = desc.raw_description
    state = replayed.state
    now = datetime.now(UTC)
    if raw.HasField("pending_workflow_task"):
        verdict.stuck = "a workflow task pending"
    elif raw.pending_activities:
        a = raw.pending_activities[0]
        verdict.stuck = (
            f"{len(raw.pending_activities)} activities pending ({a.activity_type.name} "
            f"attempt {a.attempt}: {a.last_failure.message})"
        )
    elif state is not None and state.status is not Status.CLOSED:
        due = lifecycle.next_deadline(state)
        if due is not None and due.at < now + FAR:
            verdict.stuck = f"a deadline {due.action} at {due.at:%H:%M:%S} still ahead or unacted"
    if state is not None and (state.status is Status.CLOSED) != (
        desc.status is WorkflowExecutionStatus.COMPLETED
    ):
        verdict.stuck = f"model {state.status}, workflow {desc.status}"
    if (
        state is not None
        and state.status is not Status.CLOSED
        and state.release_shipped_at is None
        and state.release_id in shipped
        and state.release_id in replayed.releases
    ):
        verdict.stuck = f"release {state.release_id} shipped; the case was never told"
    if with_snapshot and state is not None:
        try:
            snap = await CaseClient(client).snapshot(number)
            model = lifecycle.snapshot(state)
            fields = [
                "status",
                "status_since",
                "owner_tier",
                "release_id",
                "release_shipped_at",
                "next_deadline",
                "history",
                "policy",
                "policy_changes",
            ]
            wrong = [f for f in fields if getattr(snap, f) != getattr(model, f)]
            if wrong:
                verdict.snapshot = (
                    f"snapshot differs from the model in {wrong}: "
                    + "; ".join(
                        f"{f}: {getattr(snap, f)!r} != {getattr(model, f)!r}" for f in wrong
                    )[:600]
                )
        except Exception as err:
            verdict.snapshot = f"snapshot failed: {err!r}"[:300]
    return verdict


def _difference(got: Any, want: Any) -> str:
    if isinstance(got, list) and isinstance(want, list):
        for i, (a, b) in enumerate(zip(got, want, strict=False)):
            if a != b:
                return f"[{i}] {a!r} != {b!r}"[:800]
        return f"{len(got)} items != {len(want)}"
    return f"{got!r} != {want!r}"[:800]


async def judge_all(
    client: Client,
    store: CaseStore,
    run_ids: dict[str, str],
    numbers: list[str],
    received: Counter[str],
    shipped: list[str],
    snapshot: bool,
) -> dict[str, Verdict]:
    doubtful = {e.message_id: e.resent_in_doubt for e in await store.outbox() if e.resent_in_doubt}
    gate = asyncio.Semaphore(16)

    async def one(number: str) -> Verdict:
        async with gate:
            return await judge(
                client, store, number, run_ids[number], received, doubtful, shipped, snapshot
            )

    verdicts = await asyncio.gather(*(one(n) for n in numbers))
    return {v.case_number: v for v in verdicts}


# ---- the run -------------------------------------------------------------------------------


async def case_store(soak: Soak) -> tuple[str, str, TcpProxy | None, PostgresDatabases | None]:
    """(the workers' URL, the checker's URL, the proxy, the databases to drop)."""
    if soak.store_kind == "sqlite":
        url = f"sqlite+aiosqlite:///{soak.workdir / 'cases.db'}"
        await upgrade(url)
        return url, url, None, None
    databases = PostgresDatabases(POSTGRES_ADMIN_URL)
    direct = await databases.create()
    await upgrade(direct)
    target = make_url(direct)
    proxy = await TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = target.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    return proxied, direct, proxy, databases


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


async def main(soak: Soak) -> int:
    started = time.monotonic()
    send_until = soak.seconds
    ships = traffic.releases(random.Random(f"{soak.seed}:releases"), 3, soak.seconds * 0.8)
    scripts = traffic.scripts(soak.seed, soak.cases, soak.seconds * 0.7, send_until, ships)
    schedule = faults.schedule(soak.seed, soak.seconds * 0.05, soak.seconds * 0.85, soak.store_kind)
    intents = Counter(s.intent for sc in scripts for s in sc.steps)
    header = [
        f"soak seed {soak.seed}: {soak.minutes:g} min, {soak.cases} cases, store {soak.store_kind}",
        f"  replay: make soak SEED={soak.seed} MINUTES={soak.minutes:g} "
        f"STORE={soak.store_kind} CASES={soak.cases}",
        f"  workdir {soak.workdir}",
        f"  scripted events {sum(intents.values())}: {dict(intents)}",
        f"  releases: {', '.join(f'{r.release_id} ships t+{r.ship_at:.0f}s' for r in ships)}",
        f"  fault schedule ({len(schedule)}):",
        *(f"    {f}" for f in schedule),
    ]
    print("\n".join(header), flush=True)

    workers_url, checker_url, proxy, databases = await case_store(soak)
    inbox = Inbox(free_port()).start()
    rig = faults.Rig(soak.workdir, workers_url, inbox, proxy, f"soak-{uuid.uuid4().hex[:8]}")
    store = CaseStore(checker_url)
    status = 1
    try:
        await rig.start_server()
        await rig.start_workers(2)
        client = await connect(rig.address)
        rig.note("rig up: server, two workers, SMTP sink, case store")
        t0 = rig.started = time.monotonic()  # the schedule's offsets count from here
        until = t0 + send_until
        watcher = asyncio.create_task(watch_workers(rig))
        striking = asyncio.create_task(strike_all(rig, schedule, t0))
        driving = [
            asyncio.create_task(drive(soak, client, rig.task_queue, s, t0, until)) for s in scripts
        ]
        driving += [
            asyncio.create_task(ship(soak, client, rig.task_queue, r, t0, until)) for r in ships
        ]
        struck = await striking
        rig.note(f"faults over: {dict(struck)}")
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        for task in driving:
            task.cancel()
        await asyncio.gather(*driving, return_exceptions=True)
        rig.note(
            f"traffic stopped: {soak.counts.opened} cases opened, sent {dict(soak.counts.sent)}"
        )
        rig.ensure_workers()
        await rig._restart(rig.workers)  # every worker up for the settling

        numbers = sorted(soak.run_ids)
        settle_from = time.monotonic()
        unsettled = list(numbers)
        verdicts: dict[str, Verdict] = {}
        while unsettled and time.monotonic() - settle_from < soak.settle:
            await asyncio.sleep(10)
            received = message_ids(inbox.messages)
            verdicts.update(
                await judge_all(
                    client, store, soak.run_ids, unsettled, received, soak.counts.shipped, False
                )
            )
            unsettled = [n for n in unsettled if not verdicts[n].settled]
            rig.note(f"settling: {len(unsettled)} cases not yet settled")
        settled_after = time.monotonic() - settle_from
        await asyncio.sleep(2)  # a late duplicate would arrive now
        received = message_ids(inbox.messages)
        verdicts = await judge_all(
            client, store, soak.run_ids, numbers, received, soak.counts.shipped, True
        )
        watcher.cancel()
        soak.outbox_in_doubt = sum(e.resent_in_doubt for e in await store.outbox())
        status = report(soak, rig, verdicts, received, struck, settled_after, started, header)
    finally:
        await store.dispose()
        await rig.shutdown()
        if databases is not None:
            await databases.drop_all()
        if status == 0 and not soak.keep:
            shutil.rmtree(soak.workdir, ignore_errors=True)
    return status


def report(
    soak: Soak,
    rig: faults.Rig,
    verdicts: dict[str, Verdict],
    received: Counter[str],
    struck: Counter[str],
    settled_after: float,
    started: float,
    header: list[str],
) -> int:
    all_v = list(verdicts.values())
    expected = Counter(m for v in all_v for m in v.replayed.message_ids)
    strangers = {m: n for m, n in received.items() if m not in expected}
    got = sum(n for m, n in received.items() if m in expected)
    duplicates = sum(n - 1 for m, n in received.items() if m in expected and n > 1)
    # Cases whose history no longer replays (tests/reliability/test_regrouped_replay.py):
    # every later task fails with TMPRL1100, so what they still owe is missing too.
    nde = {
        v.case_number
        for v in all_v
        if any("NON_DETERMINISTIC" in f for f in v.replayed.failed_tasks)
        or "TMPRL1100" in v.snapshot
        or "Workflow Task in failed state" in v.snapshot
    }
    lost = [m for v in all_v for m in v.missing]
    lost_elsewhere = [m for v in all_v if v.case_number not in nde for m in v.missing]
    doubled = [m for v in all_v for m in v.unexplained_duplicates]
    stuck = {v.case_number: v.stuck for v in all_v if v.stuck}
    stuck_elsewhere = [n for n in stuck if n not in nde]
    rows = {v.case_number: v.wrong_rows for v in all_v if v.wrong_rows}
    policy_rows = {v.case_number: v.wrong_policy_rows for v in all_v if v.wrong_policy_rows}
    snapshots = {v.case_number: v.snapshot for v in all_v if v.snapshot}
    failed = {v.case_number: v.replayed.failed_tasks for v in all_v if v.replayed.failed_tasks}
    problems = {v.case_number: v.replayed.problems for v in all_v if v.replayed.problems}
    duplicate_keys = [m for m, n in expected.items() if n > 1]
    statuses = Counter(str(v.replayed.state.status) for v in all_v if v.replayed.state)
    taken = sum(v.replayed.events for v in all_v)
    ignored = sum(v.replayed.duplicates for v in all_v)
    refused = sum(v.replayed.rejected for v in all_v)
    took = (time.monotonic() - started) / 60
    in_doubt = sum(
        1
        for v in all_v
        for m in set(v.replayed.message_ids)
        if received[m] > 1 and m not in v.unexplained_duplicates
    )
    errors = soak.counts.send_errors
    figures = [
        ("seed", str(soak.seed)),
        ("store", soak.store_kind),
        (
            "duration",
            f"{took:.1f} min ({soak.minutes:g} of traffic and faults, settled in "
            f"{settled_after:.0f} s)",
        ),
        ("cases", f"{len(all_v)} opened of {soak.cases}; at the end {dict(statuses)}"),
        ("events sent", f"{sum(soak.counts.sent.values())}: {dict(soak.counts.sent)}"),
        ("events taken", f"{taken} (duplicates ignored {ignored}, refused {refused})"),
        ("deadlines acted", str(sum(v.replayed.deadlines for v in all_v))),
        ("releases shipped", ", ".join(soak.counts.shipped) or "none"),
        ("faults", f"{sum(struck.values())}: {dict(struck)}"),
        ("workers exited by themselves", f"{rig.exits} (restarted, as a supervisor does)"),
        ("emails expected", str(sum(expected.values()))),
        ("emails got", f"{got} ({duplicates} duplicates)"),
        (
            "resent in doubt",
            f"{soak.outbox_in_doubt} (outbox); {in_doubt} of them arrived twice",
        ),
        (
            "lost",
            f"{len(lost_elsewhere)} (+{len(lost) - len(lost_elsewhere)} owed by NDE-stuck cases)",
        ),
        ("unexpected", f"{len(strangers)} unknown, {len(doubled)} duplicates not in doubt"),
        ("history rows wrong", str(len(rows) + len(policy_rows))),
        ("stuck", f"{len(stuck_elsewhere)} (+{len(stuck) - len(stuck_elsewhere)} NDE-stuck)"),
        ("nondeterminism (TMPRL1100)", f"{len(nde)} cases: {sorted(nde)[:5]}"),
        ("snapshot wrong", str(len(snapshots))),
        ("WorkflowTaskFailed", str(sum(len(f) for f in failed.values()))),
        (
            "send errors (outages)",
            f"{sum(errors.values())}: {dict(errors.most_common(6))}",
        ),
    ]
    print("\nsoak result\n" + table(figures), flush=True)
    findings = [line for line in rig.log if "FINDING" in line]
    ok = not (
        lost
        or strangers
        or doubled
        or rows
        or policy_rows
        or stuck
        or snapshots
        or failed
        or problems
        or duplicate_keys
        or findings
    )
    (soak.workdir / "result.json").write_text(
        json.dumps(
            {
                "figures": dict(figures),
                "lost": lost[:50],
                "unexpected": list(strangers)[:50],
                "doubled": doubled[:50],
                "rows": dict(list(rows.items())[:50]),
                "policy_rows": dict(list(policy_rows.items())[:50]),
                "stuck": dict(list(stuck.items())[:50]),
                "snapshots": dict(list(snapshots.items())[:50]),
                "failed_tasks": dict(list(failed.items())[:50]),
                "problems": problems,
                "duplicate_keys": duplicate_keys[:50],
                "rig_log": rig.log,
            },
            indent=1,
        )
    )
    if ok:
        print(f"soak PASSED (seed {soak.seed})", flush=True)
        return 0
    print("\nsoak FAILED\n" + "\n".join(header), flush=True)
    for title, items in [
        ("lost", lost),
        ("unexpected", list(strangers)),
        ("duplicates not in doubt", doubled),
        ("history rows", [f"{k}: {v}" for k, v in rows.items()]),
        ("policy rows", [f"{k}: {v}" for k, v in policy_rows.items()]),
        ("stuck", [f"{k}: {v}" for k, v in stuck.items()]),
        ("snapshot", [f"{k}: {v}" for k, v in snapshots.items()]),
        ("WorkflowTaskFailed", [f"{k}: {v}" for k, v in failed.items()]),
        ("model problems", [f"{k}: {v}" for k, v in problems.items()]),
        ("keys twice in the model", duplicate_keys),
        ("rig findings", findings),
    ]:
        if items:
            print(f"  {title} ({len(items)}): " + "\n    ".join(["", *map(str, items[:10])]))
    print(f"  details: {soak.workdir / 'result.json'} (workdir kept)", flush=True)
    return 1


def parse(argv: list[str]) -> Soak:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES") or 30))
    parser.add_argument(
        "--seed", type=int, default=int(os.environ.get("SEED") or random.randrange(1, 10**6))
    )
    parser.add_argument(
        "--store", choices=["postgresql", "sqlite"], default=os.environ.get("STORE") or "postgresql"
    )
    parser.add_argument("--cases", type=int, default=int(os.environ.get("CASES") or 500))
    parser.add_argument("--settle", type=float, default=240.0, help="seconds to settle at most")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    return Soak(args.seed, args.minutes, args.store, args.cases, args.settle, args.keep)


def run(argv: list[str] | None = None) -> int:
    soak = parse(sys.argv[1:] if argv is None else argv)
    return asyncio.run(main(soak))
