"""A late deadline never shortens the next stay (SPEC "Deadlines"): with no worker at the
Closing instant, the case gets its Closing notice when a worker is back and stays in Closing
the full period after it. The outage is real (no worker polls), on a staff policy in minutes;
the pure core's tests prove the same rule at the real 14/28/42 days."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.api.enums.v1 import EventType

from tests.scenario import TIER1, Case
from worker import build_worker
from workflows.contract import DeadlinePolicy
from workflows.lifecycle import ON_TIME

POLICY = DeadlinePolicy(pcr_reminder="1min", pcr_closing="2min", closing_closed="2min")
MARGIN = timedelta(seconds=20)


async def test_after_an_outage_the_customer_gets_the_full_closing_period(
    env, worker_settings, store, inbox, unique
):
    async with build_worker(env.client, worker_settings, store):
        case = await Case(env, worker_settings.task_queue, unique("late")).open(policy=POLICY)
        snap = await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
        entered = snap.status_since
        closing_due = entered + timedelta(minutes=2)
        await case.pass_until(closing_due - timedelta(seconds=3))
        await inbox.wait_for(Subject="Reminder")  # at one minute, a worker running

    # No worker polls: the Closing instant passes; the case's clock runs at wall speed.
    while await env.get_current_time(case.handle) < closing_due + ON_TIME + timedelta(seconds=2):
        await asyncio.sleep(0.2)  # waiting on the case's own clock: the outage is the scenario
    assert not inbox.matching(Subject="Closing")

    async with build_worker(env.client, worker_settings, store):
        snap = await case.wait_status("Closing", timeout=30)
        acted = snap.status_since
        assert acted > closing_due + ON_TIME  # counted from when the case really entered it
        row = snap.history[-1]
        assert (row.due, row.at, row.actor.role) == (closing_due, acted, "system")
        [notice] = await inbox.wait_for(Subject="Closing")
        closes = acted + timedelta(minutes=2)
        assert snap.next_deadline and snap.next_deadline.at == closes
        body = " ".join(notice.get_content().split())
        assert f"in 2 minutes (on {closes:%A} {closes.day} {closes:%B %Y}, {closes:%H:%M} UTC)" in (
            body
        )
        # The full period of Closing after the notice: still Closing just before it ends.
        await case.pass_until(closes - MARGIN)
        assert (await case.settle(0.5)).status == "Closing"
        await case.pass_until(closes + MARGIN)
        result = await case.handle.result()
        assert result.status == "Closed" and result.closed_at == closes
        stored = await store.history(case.number)
        assert [(r.to_status, r.due) for r in stored][-2:] == [
            ("Closing", closing_due),
            ("Closed", closes),
        ]
    assert len(inbox.matching(Subject="Reminder")) == 1
    failures = [
        e
        async for e in case.handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failures == []
