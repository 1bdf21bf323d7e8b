"""Pending Customer Response, as the guide tells it: after two weeks a reminder is sent; after
two more the case goes to Closing; after two more weeks in Closing it is Closed. Real default
durations, on the dev server with time skipping."""

from __future__ import annotations

from datetime import timedelta

from tests.scenario import TIER1, Case

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


async def test_two_weeks_reminder_then_closing_then_closed(env, case_worker, worker_settings, inbox, unique):
    case = await Case(env, worker_settings.task_queue, unique("PCR")).open()
    await inbox.wait_for(Subject=case.number)  # the "case opened" email
    snap = await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    assert snap.next_deadline and snap.next_deadline.action == "pcr_reminder"
    entered = snap.status_since
    assert snap.next_deadline.at == entered + 14 * DAY
    assert [d.action for d in snap.timeline] == ["pcr_reminder", "pcr_closing", "closing_closed"]

    await case.pass_time(14 * DAY - 10 * SECOND)
    assert not inbox.matching(Subject="Reminder")
    await case.pass_time(20 * SECOND)
    [reminder] = await inbox.wait_for(Subject="Reminder", To="ann@alma.example")
    assert case.number in reminder["Subject"]
    snap = await case.wait(lambda s: s.next_deadline is not None and s.next_deadline.action == "pcr_closing")
    assert snap.status == "Pending Customer Response"

    await case.pass_time(14 * DAY - 20 * SECOND)
    assert (await case.settle(0.5)).status == "Pending Customer Response"
    await case.pass_time(20 * SECOND)
    snap = await case.wait_status("Closing")
    assert snap.status_since == entered + 28 * DAY  # acts at its instant, to the second
    await inbox.wait_for(Subject="Closing")

    await case.pass_time(14 * DAY + 10 * SECOND)
    await inbox.wait_for(Subject="Closed")
    result = await case.handle.result()
    assert result.status == "Closed"
    assert [h.to_status for h in result.history][-2:] == ["Closing", "Closed"]
    assert len(inbox.matching(Subject="Reminder")) == 1
