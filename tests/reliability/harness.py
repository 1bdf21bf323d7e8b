"""What the reliability scenarios share: the worker as a real process, an oracle computed from the
pure core, and the checks that nothing was lost, doubled or left stuck.

The oracle: a case's events, applied in order to ``lifecycle.decide`` (and then every deadline
that falls due, at its own instant), give exactly the emails (their idempotency keys, so their
Message-IDs) and the history rows (their sequence numbers) a correct run produces, whatever
crashed on the way. The scenarios compare what the SMTP server and the database actually hold
with that, one for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.mailer import message_id
from activities.store import CaseStore
from tests.scenario import case_input as scenario_case_input
from tests.scenario import worker_polling
from workflows import lifecycle
from workflows.contract import (
    Actor,
    CaseInput,
    CustomerReply,
    DeadlinePolicy,
    Notify,
    Persist,
    Status,
    TierHandoff,
    TransitionRequest,
    case_workflow_id,
)

REPO = Path(__file__).resolve().parents[2]
# How long recovery may take before a scenario calls the cases stuck. A stuck case stays stuck,
# so a bound far past a busy machine's recovery (several times a quiet one's) costs nothing.
RECOVERY_WITHIN = 180.0
T = TypeVar("T")
U = TypeVar("U")

CUSTOMER = Actor(role="customer", name="Ann Reader", institution="Alma University")
TIER1 = Actor(role="tier1", name="Tom One")
TIER2 = Actor(role="tier2", name="Tess Two")
KB = Actor(role="kb_team", name="Kay Bee")

Event = TransitionRequest | CustomerReply | TierHandoff
SIGNAL_NAMES: dict[type[Event], str] = {
    TransitionRequest: "transition",
    CustomerReply: "customer_reply",
    TierHandoff: "tier_handoff",
}


# ==============================================================================================
# The worker as a real process: `python worker.py`, as production runs it
# ==============================================================================================


def worker_environment(**settings: str) -> dict[str, str]:
    """The test process's environment without any Temporal or project setting, plus ``settings``
    (``TEMPORAL_ADDRESS=...``, ``CASES_...=...``)."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CASES_", "PYTEST"))
    }
    base.update(PYTHONUNBUFFERED="1", CASES_LOG_FORMAT="json")
    base.update(settings)
    return base


def case_worker_environment(
    env: Any, task_queue: str, database_url: str, inbox: Any, **more: str
) -> dict[str, str]:
    """``worker_environment`` for a worker of the test's dev server, task queue, case store and
    SMTP sink."""
    return worker_environment(
        TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
        CASES_TASK_QUEUE=task_queue,
        CASES_DATABASE_URL=database_url,
        CASES_SMTP_URL=inbox.url,
        # The scenarios run on a stopwatch: deadlines of seconds.
        CASES_POLICY_SHORTEST="1s",
        **more,
    )


# A worker outlives no test run: should pytest end abruptly (its timeout exits the process, no
# fixture cleans up), the kernel sends the worker SIGTERM, and it drains and stops as in production.
DIES_WITH_THE_TESTS = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


@dataclass
class WorkerProcess:
    """``python worker.py`` in its own process group, its output in ``log_path``."""

    name: str
    env: dict[str, str]
    log_path: Path
    # What runs under the interpreter: production's worker, or a test's variant of it.
    command: tuple[str, ...] = ("worker.py",)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    _offset: int = 0

    def start(self) -> WorkerProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        self._offset = self._log.tell()
        self.process = subprocess.Popen(
            [*DIES_WITH_THE_TESTS, sys.executable, *self.command],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches all it started
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """What this start of the process has written so far."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines of this start (anything else is skipped)."""
        out = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    async def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.running():
                raise AssertionError(f"worker {self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker {self.name}: no {text!r} in {timeout} s\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    async def ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Once Temporal lists this process as polling its task queue (its log line comes a
        moment before the poll, and a worker of the queue stopped earlier is still listed)."""
        await self.wait_for_line("worker polling", timeout)
        address = self.env.get("TEMPORAL_ADDRESS") or (
            f"127.0.0.1:{self.env['CASES_DEV_SERVER_PORT']}"
        )
        # The server may be away a while (the soak restarts it while a worker comes back).
        give_up = time.monotonic() + timeout
        while True:
            try:
                client = await Client.connect(address)
                break
            except RuntimeError:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.5)
        # The SDK's default worker identity: the worker process's pid at this host.
        identity = f"{self.pid}@{socket.gethostname()}"
        await worker_polling(client, self.env["CASES_TASK_QUEUE"], identity)
        return self

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """``kill -9`` the whole process group (the worker and anything it started)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
        if sig is signal.SIGKILL:
            self.process.wait()
            self._close()

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM (the worker drains), then SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, grace)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything left in its group
        self._close()
        return code

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


# ==============================================================================================
# The oracle: what a correct run produces, from the pure core
# ==============================================================================================


@dataclass
class Plan:
    """One case: its start input and the events other systems send, in order."""

    case: CaseInput
    events: list[Event] = field(default_factory=list)
    label: str = ""
    run_id: str | None = None  # the run that opened it, once open: its effect keys carry it

    @property
    def number(self) -> str:
        return self.case.case_number

    @property
    def workflow_id(self) -> str:
        return case_workflow_id(self.number)


@dataclass(frozen=True)
class Expected:
    status: Status
    message_ids: frozenset[str]  # the Message-ID of every email the case sends
    history_seqs: tuple[int, ...]  # the seq of every status change (one database row each)


def expect(plan: Plan, now: datetime | None = None, until: datetime | None = None) -> Expected:
    """Run the plan through the pure core: its events in order at ``now``, then every deadline
    that falls due (each at its own instant) until none is left, or until ``until``."""
    now = now or datetime.now(UTC)
    decision = lifecycle.open_case(plan.case, now, opened_by_run=plan.run_id)
    state, effects = decision.state, list(decision.effects)
    for event in plan.events:
        if lifecycle.is_duplicate(state, getattr(event, "event_id", None)):
            continue
        decision = lifecycle.decide(state, event, now)
        state = decision.state
        effects += decision.effects
    while state.status is not Status.CLOSED and (due := lifecycle.next_deadline(state)):
        if until is not None and due.at > until:
            break
        decision = lifecycle.decide(state, lifecycle.Due(due), due.at)
        state = decision.state
        effects += decision.effects
    return Expected(
        status=state.status,
        message_ids=frozenset(message_id(e.key) for e in effects if isinstance(e, Notify)),
        history_seqs=tuple(
            e.history.seq for e in effects if isinstance(e, Persist) and e.history is not None
        ),
    )


def case_input(number: str, policy: DeadlinePolicy | None = None, **fields: Any) -> CaseInput:
    """The scenarios' case, with a contact of its own (one mailbox per case in the SMTP sink)."""
    fields.setdefault("contact_email", f"{number.lower()}@alma.example")
    # A customer opens with the defaults; staff may set a policy at open.
    fields.setdefault("opened_by", CUSTOMER if policy is None else TIER1)
    return scenario_case_input(number, policy=policy, **fields)


def to(status: str, actor: Actor, **kw: Any) -> TransitionRequest:
    return TransitionRequest(to=Status(status), actor=actor, **kw)


def reply(text: str = "Here is the log you asked for.", **kw: Any) -> CustomerReply:
    kw.setdefault("actor", CUSTOMER)
    return CustomerReply(text=text, **kw)


# Paths through the lifecycle, chosen so that at any moment some cases wait in activities and
# some on timers. Each ends in a state that needs nobody: Closed (by a timer or the customer) or
# waiting for people (no deadline).
def mixed_plans(prefix: str, count: int, policy: DeadlinePolicy) -> list[Plan]:
    paths: list[tuple[str, list[Event]]] = [
        # reminder, -> Closing, -> Closed: three timers
        ("pcr-timeout", [to("Tier 1 Analysis", TIER1), to("Pending Customer Response", TIER1)]),
        # resolved, then the Closing timer
        ("resolved", [to("Tier 1 Analysis", TIER1), to("Closing", TIER1)]),
        # the customer answers: back with Support, waiting for people
        (
            "answered",
            [
                to("Tier 1 Analysis", TIER1),
                to("Pending Customer Response", TIER1),
                reply(event_id="portal-1"),
                reply(event_id="portal-1"),  # delivered twice: one effect
            ],
        ),
        # Tier 2 round trip, then resolved and confirmed by the customer (no timer)
        (
            "tier2-confirmed",
            [
                to("Tier 1 Analysis", TIER1),
                TierHandoff(to_tier=2, reason="consult", actor=TIER1),
                to("Tier 2 Analysis", TIER2),
                TierHandoff(to_tier=1, reason="answered", actor=TIER2),
                to("Tier 1 Analysis", TIER1),
                to("Closing", TIER1),
                to("Closed", CUSTOMER),
            ],
        ),
        # a comment where no reply transition exists: kept, Support told; then vendor input
        (
            "comment-vendor",
            [
                to("Tier 1 Analysis", TIER1),
                reply("One more detail."),
                to("Waiting for Vendor Input", TIER1),
                to("Tier 1 Analysis", KB),
                to("Closing", KB),
            ],
        ),
    ]
    plans = []
    for i in range(count):
        label, events = paths[i % len(paths)]
        number = f"{prefix}-{i:04d}"
        plans.append(Plan(case_input(number, policy), list(events), label))
    return plans


# ==============================================================================================
# Driving cases, and reading what happened
# ==============================================================================================


async def each(items: Iterable[T], job: Callable[[T], Awaitable[U]], limit: int = 16) -> list[U]:
    """``job(item)`` for every item, ``limit`` at a time, results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(item: T) -> U:
        async with gate:
            return await job(item)

    return await asyncio.gather(*(run(i) for i in items))


async def open_and_drive(client: Client, task_queue: str, plans: Sequence[Plan]) -> None:
    """Open every case, then send each its events (in order per case, cases side by side)."""
    from starter.client import CaseClient

    cases = CaseClient(client, task_queue)

    async def open_one(plan: Plan) -> None:
        plan.run_id = (await cases.open(plan.case)).first_execution_run_id

    await each(plans, open_one, 16)
    await each(plans, lambda p: send_events(client, p), 16)


async def send_events(client: Client, plan: Plan) -> None:
    """The plan's events as signals, in order: other systems fire and forget, and a signal is
    accepted by the server whether or not a worker is up."""
    handle = client.get_workflow_handle(plan.workflow_id)
    for event in plan.events:
        await handle.signal(SIGNAL_NAMES[type(event)], event)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: Callable[[], Awaitable[str]]
) -> float:
    """Poll ``check`` until true; the seconds it took. On timeout, fail with ``what()``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {await what()}")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


@dataclass
class Described:
    workflow_id: str
    status: WorkflowExecutionStatus | None
    case_status: str | None
    pending_activities: int
    activity_attempts: list[int]
    workflow_task_age: float | None  # seconds since the pending workflow task was scheduled
    activity_problems: list[str] = field(default_factory=list)


async def describe(client: Client, workflow_id: str) -> Described:
    from workflows import search

    desc = await client.get_workflow_handle(workflow_id).describe()
    raw = desc.raw_description
    age = None
    if raw.HasField("pending_workflow_task"):
        scheduled = raw.pending_workflow_task.scheduled_time.ToDatetime().replace(tzinfo=UTC)
        age = (datetime.now(UTC) - scheduled).total_seconds()
    return Described(
        workflow_id=workflow_id,
        status=desc.status,
        case_status=desc.typed_search_attributes.get(search.CASE_STATUS),
        pending_activities=len(raw.pending_activities),
        activity_attempts=[a.attempt for a in raw.pending_activities],
        workflow_task_age=age,
        activity_problems=[
            f"{a.activity_type.name} attempt {a.attempt} state {a.state} by "
            f"{a.last_worker_identity} started {a.last_started_time.ToJsonString()} "
            f"beat {a.last_heartbeat_time.ToJsonString()}: {a.last_failure.message}"
            for a in raw.pending_activities
        ],
    )


async def describe_all(client: Client, workflow_ids: Sequence[str]) -> list[Described]:
    return await each(workflow_ids, lambda w: describe(client, w), 32)


async def stuck(client: Client, workflow_ids: Sequence[str], bound: float) -> list[str]:
    """Cases with a workflow task pending for longer than ``bound`` seconds."""
    described = await describe_all(client, workflow_ids)
    return [
        d.workflow_id
        for d in described
        if d.workflow_task_age is not None and d.workflow_task_age > bound
    ]


SERVER_CLOSED_TASKS = (
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND,
)


async def failed_workflow_tasks(client: Client, workflow_id: str) -> list[str]:
    """``WorkflowTaskFailed`` events across every run of the case: a bug, never an outage.

    Except two the server records on its own, neither a failure of the workflow code:
    "unhandled command" (a signal arrived while the workflow was completing its task with a
    continue-as-new, so the server refused that completion to hand the workflow the signal
    first) and "force close command" (more events arrived behind a task in flight than the
    server buffers, ``history.maximumBufferedEventsBatch``, 100: it closes that task, here one a
    killed worker held, and hands all of them to the next). The SDK simply runs the task again."""
    failures = []
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                attrs = event.workflow_task_failed_event_attributes
                if attrs.cause in SERVER_CLOSED_TASKS:
                    continue
                cause = WorkflowTaskFailedCause.Name(attrs.cause)
                failures.append(f"{execution.run_id}: {cause} {attrs.failure.message}")
    return failures


def message_ids(messages: Iterable[Any]) -> Counter[str]:
    """How often each Message-ID arrived (a long one comes folded onto its own line)."""
    return Counter("".join(str(m.message["Message-ID"]).split()) for m in messages)


@dataclass
class Tally:
    """One scenario's counts, for the suite's closing table."""

    scenario: str
    cases: int = 0
    messages_expected: int = 0
    messages_received: int = 0
    duplicates: int = 0
    in_doubt: int = 0  # resends the outbox recorded as possibly duplicate (a send cut by a kill)
    missing: int = 0
    stuck: int = 0
    history_rows_expected: int = 0
    history_rows: int = 0
    seconds: float = 0.0
    notes: str = ""


async def check_outcome(
    client: Client,
    store: CaseStore,
    plans: Sequence[Plan],
    expected: dict[str, Expected],
    received: Counter[str],
    tally: Tally,
    stuck_bound: float = 15.0,
    killed: bool = False,
) -> None:
    """Every case in its expected status, every email once, every history row once, nothing
    stuck; the counts go into ``tally``. Only where a worker was ``killed`` (or the database cut
    mid-send) may a send be in doubt (and its message arrive twice)."""
    want = Counter(m for e in expected.values() for m in e.message_ids)
    ours = {m: n for m, n in received.items() if m in want}
    tally.cases = len(plans)
    tally.messages_expected = sum(want.values())
    tally.messages_received = sum(ours.values())
    tally.duplicates = sum(n - 1 for n in ours.values() if n > 1)
    # A kill between the SMTP server's acceptance and the outbox record leaves a send no one
    # can know about (SMTP cannot be asked); the resend is on record, and only it may double.
    doubtful = {e.message_id: e.resent_in_doubt for e in await store.outbox() if e.resent_in_doubt}
    tally.in_doubt = sum(doubtful.values())
    unexplained = [m for m, n in ours.items() if n - 1 > doubtful.get(m, 0)]
    # A reminder due together with the Closing it announces is not sent (the Closing notice
    # says it all): where no worker ran at the Closing's instant, its reminder may be absent.
    optional = {m for plan in plans for m in await reminders_overtaken(store, plan)}
    tally.missing = len(set(want) - set(ours) - optional)
    strangers = {m for m in received if m not in want}

    described = await describe_all(client, [p.workflow_id for p in plans])
    wrong_status = [
        (d.workflow_id, d.case_status, str(expected[d.workflow_id].status))
        for d in described
        if d.case_status != str(expected[d.workflow_id].status)
    ]
    stuck_cases = [
        d.workflow_id
        for d in described
        if d.workflow_task_age is not None and d.workflow_task_age > stuck_bound
    ]
    tally.stuck = len(stuck_cases)

    rows = 0
    wrong_rows = []
    for plan in plans:
        seqs = tuple(h.seq for h in await store.history(plan.number))
        rows += len(seqs)
        if seqs != expected[plan.workflow_id].history_seqs:
            wrong_rows.append((plan.number, seqs, expected[plan.workflow_id].history_seqs))
    tally.history_rows_expected = sum(len(e.history_seqs) for e in expected.values())
    tally.history_rows = rows

    assert not wrong_status, f"{len(wrong_status)} cases in the wrong status: {wrong_status[:5]}"
    assert tally.missing == 0, (
        f"{tally.missing} emails never arrived: {sorted(set(want) - set(ours) - optional)[:5]}"
    )
    assert not unexplained, f"duplicates not recorded as resent in doubt: {unexplained[:5]}"
    assert killed or not doubtful, f"sends in doubt with no worker killed: {doubtful}"
    assert not strangers, f"unexpected emails: {sorted(strangers)[:5]}"
    assert not stuck_cases, f"stuck: {stuck_cases[:5]}"
    assert not wrong_rows, f"{len(wrong_rows)} cases with wrong history rows: {wrong_rows[:3]}"


def describe_plans(plans: Sequence[Plan]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(p.label for p in plans).items()))


def is_terminal(d: Described) -> bool:
    return d.status is not None and d.status is not WorkflowExecutionStatus.RUNNING


async def safe_describe(client: Client, workflow_id: str) -> Described | None:
    try:
        return await describe(client, workflow_id)
    except RPCError:
        return None


async def reminders_overtaken(store: CaseStore, plan: Plan) -> list[str]:
    """The Message-ID of a reminder its Closing overtook: Closing acted late, past the reminder's
    instant too (no worker ran), so the reminder was due together with the Closing."""
    late = [
        row
        for row in await store.history(plan.number)
        if row.due is not None
        and row.to_status is Status.CLOSING
        and row.from_status is Status.PENDING_CUSTOMER_RESPONSE
        and row.at - row.due > lifecycle.ON_TIME
    ]
    run = f"{plan.run_id}:" if plan.run_id else ""
    return [message_id(f"case-{plan.number}:{run}{row.seq - 1}:notify:reminder") for row in late]


async def arrived(store: CaseStore, plans: Sequence[Plan], wanted: set[str], got: set[str]) -> bool:
    """Every wanted email arrived, but for reminders their Closing overtook (not sent)."""
    missing = wanted - got
    if not missing:
        return True
    if any(not m.split(".notify.")[-1].startswith("reminder@") for m in missing):
        return False
    overtaken = {m for plan in plans for m in await reminders_overtaken(store, plan)}
    return missing <= overtaken


async def check_deadline_instants(store: CaseStore, plans: Sequence[Plan]) -> int:
    """Every status change a timer made is dated its deadline's own instant (the previous
    change plus the policy's span), however late a worker got to it; how many were checked."""
    checked, wrong = 0, []
    for plan in plans:
        policy = DeadlinePolicy().with_fields(plan.case.policy)
        spans = {
            (Status.PENDING_CUSTOMER_RESPONSE, Status.CLOSING): policy.pcr_closing,
            (Status.CLOSING, Status.CLOSED): policy.closing_closed,
        }
        rows = await store.history(plan.number)
        for before, row in itertools.pairwise(rows):
            if row.actor.role != "system":
                continue
            span = spans[(row.from_status, row.to_status)]  # type: ignore[index]
            # Due at its instant; acted then, or later when no worker ran (the next stay then
            # counts from when it acted).
            due = span.after(before.at)
            if row.due != due or row.at < due:
                wrong.append((plan.number, str(row.to_status), row.due, row.at, due))
            checked += 1
    assert not wrong, f"timer transitions not at their instants: {wrong[:5]}"
    return checked
