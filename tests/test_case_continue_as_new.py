"""A long-lived case continues as new before its history grows large, carrying its state: no
deadline is re-armed or lost, no effect is done twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.scenario import TIER1, Case
from workflows.case import CASE_HISTORY_BOUND
from workflows.contract import Actor, TransitionRequest

DAY = timedelta(days=1)
MARGIN = timedelta(minutes=1)


async def test_continue_as_new_mid_deadline_keeps_the_deadline(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("can")).open()
    snap = await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    assert snap.next_deadline is not None
    reminder_at = snap.next_deadline.at
    first_run = (await case.client.handle(case.number).describe()).run_id
    await case.pass_time(10 * DAY)

    # A flood of refused events (a misconfigured system) grows the history past the bound.
    handle = case.client.handle(case.number)
    wrong = TransitionRequest(to="Development", actor=Actor(role="tier1", name="Robot"))
    # In bursts, as a misbehaving system sends them: each burst lands in one workflow task.
    for _ in range((CASE_HISTORY_BOUND + 200) // 100):
        await asyncio.gather(*(handle.signal("transition", wrong) for _ in range(100)))
        await asyncio.sleep(0.05)

    async def run_id() -> str:
        return (await case.client.handle(case.number).describe()).run_id

    for _ in range(200):
        if await run_id() != first_run:
            break
        await asyncio.sleep(0.1)
    assert await run_id() != first_run, "the case did not continue as new"

    snap = await case.snapshot()
    assert snap.status == "Pending Customer Response"
    assert snap.next_deadline and snap.next_deadline.at == reminder_at
    assert len(snap.rejected) <= 20  # bounded, whatever the flood

    await case.pass_until(reminder_at - MARGIN)
    assert not inbox.matching(Subject="reminder")
    await case.pass_until(reminder_at + MARGIN)
    await inbox.wait_for(Subject="reminder")
    snap = await case.wait(
        lambda s: s.next_deadline is not None and s.next_deadline.action == "pcr_closing"
    )
    await asyncio.sleep(0.5)
    assert len(inbox.matching(Subject="reminder")) == 1
    assert (
        len(inbox.matching(Subject="information requested")) == 1
    )  # nothing re-sent by the new run
