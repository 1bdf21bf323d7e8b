"""A long life: one case driven through 5,000 events (comments, and flip-flops between statuses
with and without deadlines) by a real worker process. Every run stays near the continue-as-new
bound, the database keeps the full status history (one row per change, none twice), every email
goes out once, and the deadline of the status it ends in is the guide's, to the second."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client

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
    check_outcome,
    expect,
    failed_workflow_tasks,
    message_ids,
    reply,
    send_events,
    to,
    wait_until,
    worker_environment,
)
from workflows.case import HISTORY_BOUND

EVENTS = int(os.environ.get("LONG_LIFE_EVENTS", "5000"))
# A run may pass the bound by what arrived during its last workflow task and the drain.
RUN_LIMIT = 2_000


def long_life(count: int) -> list[Event]:
    """``count`` events: flip-flops between Tier 1 Analysis and Waiting for Vendor Input with a
    comment between, every 25th round a trip through Pending Customer Response (its clock starts
    and stops), comments to make up the count, and last the entry into Pending Customer
    Response for good."""
    events: list[Event] = [to("Tier 1 Analysis", TIER1)]
    round_ = 0
    while True:
        round_ += 1
        if round_ % 25 == 0:
            more = [
                to("Pending Customer Response", TIER1),
                reply(f"answer {round_}", event_id=f"portal-{round_}"),
                to("Tier 1 Analysis", TIER1),
            ]
        else:
            more = [
                to("Waiting for Vendor Input", TIER1),
                to("Tier 1 Analysis", KB),
                reply(f"comment {round_}", event_id=f"portal-{round_}"),
            ]
        if len(events) + len(more) > count - 1:
            break
        events += more
    while len(events) < count - 1:
        events.append(reply(f"comment {len(events)}"))
    events.append(to("Pending Customer Response", TIER1))
    return events


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
    worker = spawn_worker(
        worker_environment(
            TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
            CASES_TASK_QUEUE=task_queue,
            CASES_DATABASE_URL=url,
            CASES_SMTP_URL=inbox.url,
        )
    )
    plan = Plan(case_input(unique("L")), long_life(EVENTS), "long life")
    now = datetime.now(UTC)
    before = expect(plan, now, until=now)
    await worker.ready()
    cases = CaseClient(env.client, task_queue)
    await cases.open(plan.case)
    started = time.monotonic()
    await send_events(env.client, plan)  # in order, one after the other, as fast as they go
    sent_in = time.monotonic() - started

    store = CaseStore(url)
    try:

        async def done() -> bool:
            rows = len(await store.history(plan.number))
            return rows == len(before.history_seqs) and before.message_ids <= set(
                message_ids(inbox.messages)
            )

        async def progress() -> str:
            rows = len(await store.history(plan.number))
            mail = len(before.message_ids & set(message_ids(inbox.messages)))
            return (
                f"{rows}/{len(before.history_seqs)} rows, {mail}/{len(before.message_ids)} emails"
            )

        await wait_until(done, 300, progress)
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

        # Two weeks later the reminder goes out once, in whichever run the case is by then.
        handle = env.client.get_workflow_handle(plan.workflow_id)
        await env.fast_forward(handle, timedelta(days=14, minutes=1))
        after = expect(plan, now, until=now + timedelta(days=14, minutes=1))
        assert after.message_ids - before.message_ids == {
            m for m in after.message_ids if ".notify.reminder@" in m
        }

        async def reminded() -> bool:
            return after.message_ids <= set(message_ids(inbox.messages))

        await wait_until(reminded, 30, progress)
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
    changes = len(before.history_seqs) - 1
    tally.notes = (
        f"{len(plan.events)} events ({changes} status changes) sent in {sent_in:.0f} s, all "
        f"effects done {took:.0f} s after the first; {len(lengths)} runs, longest "
        f"{max(lengths)} history events (bound {HISTORY_BOUND}); reminder at its instant"
    )
