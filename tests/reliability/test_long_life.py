"""A long life: one case driven through 5,000 events (comments, and flip-flops between statuses
with and without deadlines) by a real worker process. Every run stays near the continue-as-new
bound, the database keeps the full status history (one row per change, none twice), every email
goes out once, and the deadline of the status it ends in is the guide's, to the second."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client

from activities.mailer import message_id
from activities.store import CaseStore
from starter.client import CaseClient
from tests.reliability.harness import (
    KB,
    TIER1,
    Event,
    Plan,
    Tally,
    WorkerProcess,
    case_input,
    case_worker_environment,
    check_outcome,
    expect,
    failed_workflow_tasks,
    message_ids,
    reply,
    send_events,
    to,
    wait_until,
)
from workflows import lifecycle
from workflows.case import CASE_HISTORY_BOUND
from workflows.contract import MAX_EVENT_BYTES, Notify, Persist

# The life: 5,000 events, over 3,000 status changes and 1,600 emails. The case runs
# its effects in batches (database records and emails in lanes of their own), so the whole life
# takes a minute or two; ``LONG_LIFE_EVENTS`` makes it longer or shorter.
EVENTS = int(os.environ.get("LONG_LIFE_EVENTS", "5000"))
# A run may pass the bound by what arrived during its last workflow task and the drain.
RUN_LIMIT = 2_000


NOTE = (
    "Reproduced on the customer's sandbox with the loans report of last quarter; the totals "
    "differ by the renewals made on the last day of each month. Vendor ticket opened with the "
    "export attached; waiting for their analysis before we can say whether a patch is needed."
)


def event_id(n: int) -> str:
    """An id as portals and desks send them (a UUID), the same on every run of the test."""
    return f"desk-{uuid.uuid5(uuid.NAMESPACE_URL, f'long-life/{n}')}"


def long_life(count: int) -> list[Event]:
    """``count`` events: flip-flops between Tier 1 Analysis and Waiting for Vendor Input with a
    comment between, every 25th round a trip through Pending Customer Response (its clock starts
    and stops), comments to make up the count, and last the entry into Pending Customer
    Response for good. Every event has an id and every transition a note of a few lines, as a
    support desk writes them: the state a run carries over outgrows an event's size limit."""
    n = iter(range(count))
    events: list[Event] = [to("Tier 1 Analysis", TIER1, note=NOTE, event_id=event_id(next(n)))]
    round_ = 0
    while True:
        round_ += 1
        more: list[Event]
        if round_ % 25 == 0:
            more = [
                to("Pending Customer Response", TIER1, note=NOTE),
                reply(f"answer {round_}"),
                to("Tier 1 Analysis", TIER1, note=NOTE),
            ]
        else:
            more = [
                to("Waiting for Vendor Input", TIER1, note=NOTE),
                to("Tier 1 Analysis", KB, note=NOTE),
                reply(f"comment {round_}"),
            ]
        if len(events) + len(more) > count - 1:
            break
        events += [e.model_copy(update={"event_id": event_id(next(n))}) for e in more]
    while len(events) < count - 1:
        events.append(reply(f"comment {len(events)}", event_id=event_id(next(n))))
    events.append(to("Pending Customer Response", TIER1, event_id=event_id(next(n))))
    return events


async def carried_sizes(client: Client, workflow_id: str) -> list[int]:
    """The size of the state each continue-as-new handed to the next run."""
    sizes = []
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                attrs = event.workflow_execution_continued_as_new_event_attributes
                sizes.append(attrs.input.ByteSize())
    return sizes


CHUNK = 250


@dataclass(frozen=True)
class Checkpoint:
    events: int  # how many of the plan's events are in
    rows: int  # status rows the database must then hold
    messages: frozenset[str]  # emails that must then have arrived


def checkpoints(plan: Plan, every: int) -> list[Checkpoint]:
    """What the case must have done after each ``every`` events: the pure core, run once."""
    now = datetime.now(UTC)
    decision = lifecycle.open_case(plan.case, now, opened_by_run=plan.run_id)
    state, rows, messages = decision.state, 0, set()
    out = []
    pending = list(decision.effects)
    for index, event in enumerate(plan.events, start=1):
        decision = lifecycle.decide(state, event, now)
        state = decision.state
        pending += decision.effects
        if index % every == 0 or index == len(plan.events):
            rows += sum(1 for e in pending if isinstance(e, Persist))
            messages |= {message_id(e.key) for e in pending if isinstance(e, Notify)}
            pending = []
            out.append(Checkpoint(index, rows, frozenset(messages)))
    return out


async def caught_up(store: CaseStore, inbox: Any, plan: Plan, point: Checkpoint) -> bool:
    rows = await store.history(plan.number)
    return len(rows) == point.rows and point.messages <= set(message_ids(inbox.messages))


async def progress(store: CaseStore, inbox: Any, plan: Plan, point: Checkpoint) -> str:
    rows = len(await store.history(plan.number))
    mail = len(point.messages & set(message_ids(inbox.messages)))
    return (
        f"after {point.events} events: {rows}/{point.rows} rows, "
        f"{mail}/{len(point.messages)} emails"
    )


async def run_lengths(client: Client, workflow_id: str) -> list[int]:
    lengths = []
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        lengths.append(len((await handle.fetch_history()).events))
    return lengths


async def test_one_case_through_5000_events(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    task_queue = unique("long")
    worker = spawn_worker(case_worker_environment(env, task_queue, url, inbox))
    plan = Plan(case_input(unique("L")), long_life(EVENTS), "long life")
    await worker.ready()
    cases = CaseClient(env.client, task_queue)
    plan.run_id = (await cases.open(plan.case)).first_execution_run_id
    points = checkpoints(plan, CHUNK)
    store = CaseStore(url)
    started = time.monotonic()
    try:
        # In chunks, each sent in order as fast as it goes, the next once the case has done the
        # effects of the last: a life, not one burst, so the backlog (and each run) stays bounded.
        sent = 0
        for point in points:
            await send_events(env.client, Plan(plan.case, plan.events[sent : point.events]))
            sent = point.events
            await wait_until(
                lambda p=point: caught_up(store, inbox, plan, p),  # type: ignore[misc]
                120,
                lambda p=point: progress(store, inbox, plan, p),  # type: ignore[misc]
            )
        took = time.monotonic() - started

        snap = await cases.snapshot(plan.number)
        assert snap.status == "Pending Customer Response"
        assert snap.next_deadline is not None
        assert snap.next_deadline.at == snap.status_since + timedelta(days=14)
        assert len(snap.history) <= 50  # a bounded tail: the database keeps them all

        lengths = await run_lengths(env.client, plan.workflow_id)
        assert len(lengths) > 1, "a life this long continues as new"
        assert max(lengths) <= RUN_LIMIT, lengths
        assert await failed_workflow_tasks(env.client, plan.workflow_id) == []
        carried = await carried_sizes(env.client, plan.workflow_id)
        assert max(carried) > MAX_EVENT_BYTES, "the carried state should outgrow an event"

        # Two weeks later the reminder goes out once, in whichever run the case is by then.
        now = datetime.now(UTC)
        after = expect(plan, now, until=now + timedelta(days=14, minutes=1))
        assert after.message_ids - points[-1].messages == {
            m for m in after.message_ids if ".notify.reminder@" in m
        }
        handle = env.client.get_workflow_handle(plan.workflow_id)
        await env.fast_forward(handle, timedelta(days=14, minutes=1))

        async def reminded() -> bool:
            return after.message_ids <= set(message_ids(inbox.messages))

        await wait_until(reminded, 30, lambda: progress(store, inbox, plan, points[-1]))
        await check_outcome(
            env.client,
            store,
            [plan],
            {plan.workflow_id: after},
            message_ids(inbox.messages),
            tally,
        )
    finally:
        await store.dispose()
    tally.notes = (
        f"{len(plan.events)} events ({points[-1].rows - 1} status changes), done in "
        f"{took:.0f} s; {len(lengths)} runs, longest {max(lengths)} history events "
        f"(bound {CASE_HISTORY_BOUND}), carried state up to {max(carried) // 1024} KiB; the "
        "reminder once, at its instant"
    )
