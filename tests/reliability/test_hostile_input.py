"""Other systems send garbage: hypothesis generates signal and update payloads (wrong types,
missing fields, huge strings, unknown statuses, a forged ``system`` role, other institutions,
unicode, duplicate event ids, deep nesting, wrong encodings) against live cases served by a real
worker process. The pure core is the oracle of what each payload must do; the workflow must do
exactly that, never fail a workflow task, keep every case running in its status, record every
rejected signal (in a bounded tail) and answer every rejected update with a clear message.
Payloads over ``MAX_EVENT_BYTES`` are rejected, not stored."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from activities.mailer import message_id
from activities.store import CaseStore
from starter.client import CaseClient
from tests.reliability.harness import (
    CUSTOMER,
    TIER1,
    TIER2,
    Plan,
    Tally,
    WorkerProcess,
    case_input,
    case_worker_environment,
    describe,
    failed_workflow_tasks,
    message_ids,
    send_events,
    to,
    wait_until,
)
from workflows import lifecycle
from workflows.case import EVENTS, LOGGED_REJECTIONS
from workflows.contract import (
    MAX_EVENT_BYTES,
    Actor,
    Notify,
    Snapshot,
    Status,
    TierHandoff,
)
from workflows.lifecycle import REJECTED_TAIL, CaseState, Rejection
from workflows.payloads import Malformed, decode_object

UPDATES = ("customer_reply", "tier_handoff", "transition")
SIGNALS = (*EVENTS, "reopen_everything", "Transition")
SEEN_IDS = ("portal-1", "desk-7")
OTHER = Actor(role="customer", name="Eve", institution="Other College")
SYSTEM = Actor(role="system", name="me")


# ---- what each payload must do: the pure core decides ---------------------------------------


@dataclass
class Outcome:
    kind: str  # rejected | ignored | accepted (status unchanged) | changes (status would change)
    reason: str | None = None
    state: CaseState | None = None
    messages: frozenset[str] = frozenset()


def oracle(state: CaseState, name: str, args: list[RawValue]) -> Outcome:
    model = EVENTS.get(name)
    if model is None:
        return Outcome("rejected", "malformed")
    try:
        event = model.model_validate(decode_object(args, name))
    except (Malformed, ValidationError):
        return Outcome("rejected", "malformed")
    if lifecycle.is_duplicate(state, getattr(event, "event_id", None)):
        return Outcome("ignored")
    try:
        decision = lifecycle.decide(state, event, datetime.now(UTC))
    except Rejection as rejection:
        return Outcome("rejected", rejection.reason)
    if decision.state.status is not state.status:
        return Outcome("changes")
    notices = frozenset(message_id(e.key) for e in decision.effects if isinstance(e, Notify))
    return Outcome("accepted", state=decision.state, messages=notices)


# ---- hostile payloads ---------------------------------------------------------------------


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


def as_json(value: Any) -> RawValue:
    return raw(json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
hostile_text = st.one_of(
    st.text(max_size=40),  # any unicode, NUL and lone surrogates included
    st.sampled_from(["", " ", "\x00", "\u202e\u0644\u0627", "🦀" * 50, "a\x00b", "\ud800"]),
    st.integers(min_value=10_001, max_value=12_000).map(lambda n: "x" * n),  # over Text's limit
)
actors = st.one_of(
    st.sampled_from([CUSTOMER, TIER1, TIER2, OTHER, SYSTEM]).map(lambda a: a.model_dump()),
    st.fixed_dictionaries(
        {"role": st.sampled_from(["customer", "system", "root", "tier1", 3]), "name": hostile_text},
        optional={"institution": hostile_text | st.none() | st.just("Alma University")},
    ),
    json_values,
)
statuses = st.sampled_from([*[str(s) for s in Status], "Nowhere", "closed", "", "New "])


@st.composite
def event_dicts(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A payload shaped like the event, with hostile values and mutations."""
    fields: dict[str, Any]
    if name == "customer_reply":
        fields = {"text": draw(hostile_text), "actor": draw(actors)}
    elif name == "tier_handoff":
        fields = {
            "to_tier": draw(st.sampled_from([1, 2, 3, "2", None])),
            "reason": draw(st.sampled_from(["consult", "answered", "because"]) | hostile_text),
            "actor": draw(actors),
        }
    elif name == "transition":
        fields = {"to": draw(statuses), "actor": draw(actors)}
        if draw(st.booleans()):
            fields["release_id"] = draw(st.sampled_from(["R-1", "../etc", "2026.12"]) | json_values)
    else:
        fields = {
            "release_id": draw(st.sampled_from(["R-1", "R-2"]) | hostile_text),
            "shipped_at": draw(
                st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00", "soon"])
            ),
        }
    if draw(st.booleans()):
        fields["event_id"] = draw(st.sampled_from(SEEN_IDS) | hostile_text)
    mutation = draw(st.sampled_from(["none", "drop", "retype", "extra"]))
    if mutation == "drop" and fields:
        fields.pop(draw(st.sampled_from(sorted(fields))))
    elif mutation == "retype" and fields:
        fields[draw(st.sampled_from(sorted(fields)))] = draw(json_values)
    elif mutation == "extra":
        fields[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    return fields


@st.composite
def payloads(draw: st.DrawFn, name: str) -> list[RawValue]:
    shape = draw(
        st.sampled_from(["event", "event", "event", "json", "bytes", "encoding", "nest", "big"])
    )
    if shape == "event":
        return [as_json(draw(event_dicts(name)))]
    if shape == "json":
        return [as_json(draw(json_values))]
    if shape == "bytes":
        return [raw(draw(st.binary(max_size=200)))]
    if shape == "encoding":
        encoding = draw(st.sampled_from([b"binary/plain", b"json/protobuf", b"", b"text/plain"]))
        return [raw(json.dumps(draw(event_dicts(name))).encode(), encoding)]
    if shape == "nest":
        depth = draw(st.integers(min_value=500, max_value=30_000))
        return [raw(b"[" * depth + b"]" * depth)]
    size = draw(st.integers(min_value=MAX_EVENT_BYTES - 64, max_value=MAX_EVENT_BYTES + 4096))
    pad = "p" * size
    return [as_json({"text": pad, "actor": CUSTOMER.model_dump(), "to": "Closed"})]


@st.composite
def hostile(draw: st.DrawFn) -> tuple[int, str, str, list[RawValue]]:
    """(case index, "signal" | "update", handler name, args)."""
    how = draw(st.sampled_from(["signal", "signal", "update"]))
    name = draw(st.sampled_from(SIGNALS if how == "signal" else (*UPDATES, "reopen")))
    args = draw(payloads(name if name in EVENTS else "transition"))
    count = draw(st.sampled_from([1, 1, 1, 1, 1, 1, 0, 2]))
    args = (args * 2)[:count]
    return draw(st.integers(min_value=0, max_value=2)), how, name, args


# ---- live cases ----------------------------------------------------------------------------


@dataclass
class Live:
    plan: Plan
    state: CaseState  # the core's mirror of the case
    status: Status
    messages: set[str]  # every email the case must have sent


@dataclass
class Fixture:
    client: Client
    cases: list[Live]
    inbox: Any
    store: CaseStore
    worker: WorkerProcess
    counts: dict[str, int]


def mirror(plan: Plan) -> Live:
    now = datetime.now(UTC)
    decision = lifecycle.open_case(plan.case, now, opened_by_run=plan.run_id)
    state, effects = decision.state, list(decision.effects)
    for event in plan.events:
        decision = lifecycle.decide(state, event, now)
        state, effects = decision.state, effects + decision.effects
    messages = {message_id(e.key) for e in effects if isinstance(e, Notify)}
    return Live(plan, state, state.status, messages)


@pytest.fixture
async def live(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> Any:
    url = await postgres_databases.create()
    task_queue = unique("hostile")
    # PostgreSQL: stricter about text than SQLite.
    worker = spawn_worker(case_worker_environment(env, task_queue, url, inbox))
    prefix = unique("H")
    plans = [
        Plan(case_input(f"{prefix}-t1"), [to("Tier 1 Analysis", TIER1, event_id="portal-1")]),
        Plan(
            case_input(f"{prefix}-pcr"),
            [
                to("Tier 1 Analysis", TIER1, event_id="desk-7"),
                to("Pending Customer Response", TIER1),
            ],
        ),
        Plan(
            case_input(f"{prefix}-rel"),
            [
                to("Tier 1 Analysis", TIER1),
                TierHandoff(to_tier=2, reason="defect_verification", actor=TIER1),
                to("Tier 2 Analysis", TIER2),
                to("Development", TIER2),
                to("Pending Release", TIER2, release_id="R-1"),
            ],
        ),
    ]
    await worker.ready()
    cases = CaseClient(env.client, task_queue)
    for plan in plans:
        plan.run_id = (await cases.open(plan.case)).first_execution_run_id
        await send_events(env.client, plan)
    live_cases = [mirror(p) for p in plans]
    for case in live_cases:
        await wait_until(
            lambda c=case: _status_is(cases, c),  # type: ignore[misc]
            60,
            lambda: asyncio.sleep(0, worker.tail()),
        )
    store = CaseStore(url)
    yield Fixture(env.client, live_cases, inbox, store, worker, {})
    await store.dispose()


async def _status_is(cases: CaseClient, case: Live) -> bool:
    return (await cases.snapshot(case.plan.number)).status is case.status


async def snapshot(client: Client, case: Live) -> Snapshot:
    handle = client.get_workflow_handle(case.plan.workflow_id)
    return await handle.query("snapshot", result_type=Snapshot)


async def rejected_after(client: Client, case: Live, before: Snapshot) -> Snapshot:
    """The snapshot once one more rejected event is recorded."""
    for _ in range(400):
        snap = await snapshot(client, case)
        if snap.rejected and (not before.rejected or snap.rejected[-1] != before.rejected[-1]):
            return snap
        await asyncio.sleep(0.02)
    raise AssertionError(f"no rejection recorded; last: {before.rejected[-1:]}")


PROBE = raw(b"{probe")  # a signal that is surely rejected: marks "everything before is done"


async def send_signal(fx: Fixture, case: Live, name: str, args: list[RawValue]) -> None:
    expected = oracle(case.state, name, args)
    before = await snapshot(fx.client, case)
    handle = fx.client.get_workflow_handle(case.plan.workflow_id)
    await handle.signal(name, args=args)
    if expected.kind == "rejected":
        snap = await rejected_after(fx.client, case, before)
        entry = snap.rejected[-1]
        assert (entry.event, entry.reason) == (name, expected.reason), entry
        assert entry.message and len(entry.message) <= 1_000
        assert entry.excerpt is None or len(entry.excerpt) <= 200
    else:  # ignored or accepted: a probe behind it shows it was handled, and how
        await handle.signal("transition", PROBE)
        snap = await rejected_after(fx.client, case, before)
        assert snap.rejected[-1].excerpt == "{probe"
        assert before.rejected[-1:] == snap.rejected[-2:-1]  # nothing recorded for it
        if expected.state is not None:
            case.state = expected.state
            case.messages |= expected.messages
    assert snap.status is case.status
    assert len(snap.rejected) <= REJECTED_TAIL


async def send_update(fx: Fixture, case: Live, name: str, args: list[RawValue]) -> None:
    handle = fx.client.get_workflow_handle(case.plan.workflow_id)
    expected = (
        oracle(case.state, name, args)
        if name in UPDATES and len(args) == 1
        else Outcome("rejected", None)
    )
    try:
        snap = await handle.execute_update(name, args=args, result_type=Snapshot)
    except WorkflowUpdateFailedError as err:
        assert expected.kind == "rejected", f"refused but the core accepts it: {err.cause}"
        cause = err.cause
        assert isinstance(cause, ApplicationError), repr(cause)
        assert cause.message, "a rejected update says why"
        if expected.reason is not None:
            assert cause.type == "CaseEventRejected" and cause.non_retryable
            assert cause.details and cause.details[0] == expected.reason
            clear = f"case {case.plan.number} is in {case.status}" in cause.message
            assert clear or cause.message.startswith(f"malformed {name}: "), cause.message
        else:
            assert name in cause.message or "argument" in cause.message.lower(), cause.message
        fx.counts["updates rejected"] = fx.counts.get("updates rejected", 0) + 1
        return
    assert expected.kind in {"ignored", "accepted"}, f"accepted, but the core says {expected}"
    assert snap.status is case.status
    if expected.state is not None:
        case.state = expected.state
        case.messages |= expected.messages


EXAMPLES = [
    # JSON nested deeper than Python's recursion limit, within the size limit
    (0, "signal", "transition", [raw(b"[" * 20_000 + b"]" * 20_000)]),
    (1, "update", "transition", [raw(b'{"to": ' + b"[" * 20_000 + b"]" * 20_000 + b"}")]),
    # a NUL character in an accepted comment (PostgreSQL refuses NUL in text)
    (
        0,
        "signal",
        "customer_reply",
        [as_json({"text": "log:\x00 end", "actor": CUSTOMER.model_dump()})],
    ),
    (0, "update", "customer_reply", [as_json({"text": "\x00", "actor": CUSTOMER.model_dump()})]),
    # forged system role, by signal and by update
    (1, "signal", "transition", [as_json({"to": "Closing", "actor": SYSTEM.model_dump()})]),
    (1, "update", "transition", [as_json({"to": "Closing", "actor": SYSTEM.model_dump()})]),
    # over the size limit: rejected, not stored
    (
        2,
        "signal",
        "transition",
        [as_json({"to": "Closing", "actor": TIER1.model_dump(), "pad": "x" * MAX_EVENT_BYTES})],
    ),
    # a duplicate event id: ignored, by update and by signal
    (
        1,
        "update",
        "transition",
        [as_json({"to": "Closing", "actor": TIER1.model_dump(), "event_id": "desk-7"})],
    ),
    (
        0,
        "signal",
        "transition",
        [as_json({"to": "Closing", "actor": TIER1.model_dump(), "event_id": "portal-1"})],
    ),
    # unicode in an accepted comment: kept, Support told
    (
        0,
        "signal",
        "customer_reply",
        [as_json({"text": "🦀 \u202eredro\u200b ok", "actor": CUSTOMER.model_dump()})],
    ),
    (
        2,
        "update",
        "customer_reply",
        [as_json({"text": "ça marche", "actor": CUSTOMER.model_dump()})],
    ),
    # no argument, two arguments
    (2, "update", "transition", []),
    (2, "signal", "customer_reply", [raw(b"{}"), raw(b"{}")]),
]


async def attack(fx: Fixture, attempt: tuple[int, str, str, list[RawValue]]) -> None:
    index, how, name, args = attempt
    case = fx.cases[index]
    outcome = oracle(case.state, name, args) if name in EVENTS else Outcome("rejected")
    if outcome.kind == "changes":
        return  # a well-formed, allowed event: not hostile (the scenarios cover those)
    fx.counts[f"{how}s"] = fx.counts.get(f"{how}s", 0) + 1
    if how == "signal":
        await send_signal(fx, case, name, args)
    else:
        await send_update(fx, case, name, args)


async def test_hostile_payloads_never_harm_a_live_case(live: Fixture, tally: Tally) -> None:
    loop = asyncio.get_running_loop()

    # Hypothesis drives from a thread; each example runs on the test's event loop, where the
    # Temporal client lives. No shrinking: a harmed case would make every later example slow.
    @settings(
        max_examples=150,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(attempt=hostile())
    def one(attempt: tuple[int, str, str, list[RawValue]]) -> None:
        asyncio.run_coroutine_threadsafe(attack(live, attempt), loop).result(timeout=60)

    for explicit in reversed(EXAMPLES):
        one = example(attempt=explicit)(one)
    await asyncio.to_thread(one)
    await whole(live, tally)


async def whole(fx: Fixture, tally: Tally) -> None:
    """After the storm: no failed workflow task, every case running in its status, its
    snapshot small, every email of an accepted event (a comment) sent once, nothing stuck."""
    wanted: set[str] = set()
    for case in fx.cases:
        assert await failed_workflow_tasks(fx.client, case.plan.workflow_id) == []
        snap = await snapshot(fx.client, case)
        assert snap.status is case.status
        assert len(snap.rejected) <= REJECTED_TAIL
        assert len(snap.model_dump_json()) < 64 * 1024, "the snapshot stays small"
        described = await describe(fx.client, case.plan.workflow_id)
        assert described.status is not None and described.status.name == "RUNNING"
        assert all(a <= 2 for a in described.activity_attempts), described.activity_problems
        wanted |= case.messages

    async def delivered() -> bool:
        return wanted <= set(message_ids(fx.inbox.messages))

    async def missing() -> str:
        stuck = [
            p
            for c in fx.cases
            for p in (await describe(fx.client, c.plan.workflow_id)).activity_problems
        ]
        return f"{sorted(wanted - set(message_ids(fx.inbox.messages)))[:5]}; {stuck[:3]}"

    await wait_until(delivered, 60, missing)
    received = message_ids(fx.inbox.messages)
    tally.cases = len(fx.cases)
    tally.messages_expected = len(wanted)
    tally.messages_received = sum(received.values())
    tally.duplicates = sum(n - 1 for n in received.values() if n > 1)
    tally.missing = len(wanted - set(received))
    tally.notes = ", ".join(f"{k} {v}" for k, v in sorted(fx.counts.items()))
    assert tally.duplicates == 0
    assert set(received) == wanted, f"unexpected: {sorted(set(received) - wanted)[:5]}"


FLOOD = 1_000


async def test_a_flood_of_garbage_while_no_worker_runs_is_one_cheap_workflow_task(
    live: Fixture, tally: Tally
) -> None:
    """A misconfigured system sends a thousand bad events while the worker is down: they reach
    the case as one workflow task, which must stay within the SDK's two-second deadlock limit
    (a task that takes longer fails and is retried with the same thousand events, for good)."""
    case = live.cases[0]
    handle = live.client.get_workflow_handle(case.plan.workflow_id)
    live.worker.kill()
    garbage = [
        raw(b"{not json"),
        as_json({"to": "Closing", "actor": SYSTEM.model_dump()}),
        as_json({"to": "Development", "actor": TIER1.model_dump()}),
        as_json({"text": "me too", "actor": OTHER.model_dump()}),
        as_json([1, 2, 3]),
    ]
    for i in range(FLOOD):
        name = "customer_reply" if i % 5 == 3 else "transition"
        await handle.signal(name, garbage[i % len(garbage)])
    await handle.signal("transition", raw(b"{last"))
    started = time.monotonic()
    live.worker.start()
    await live.worker.ready()

    async def all_in() -> bool:
        snap = await snapshot(live.client, case)
        return bool(snap.rejected) and snap.rejected[-1].excerpt == "{last"

    await wait_until(all_in, 60, lambda: asyncio.sleep(0, live.worker.tail()))
    took = time.monotonic() - started
    snap = await snapshot(live.client, case)
    assert snap.status is case.status
    assert len(snap.rejected) == REJECTED_TAIL
    assert await failed_workflow_tasks(live.client, case.plan.workflow_id) == []
    # Logged one by one up to a bound, then one line: a flood is not a flood of log lines.
    logged = [line for line in live.worker.lines() if "reason" in line]
    assert len(logged) == LOGGED_REJECTIONS, len(logged)
    tally.cases = 1
    tally.notes = (
        f"{FLOOD + 1} bad signals in one workflow task, all refused {took:.0f} s after start"
    )
