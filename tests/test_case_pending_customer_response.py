"""Pending Customer Response, as the guide tells it: after two weeks a reminder is sent; after
two more the case goes to Closing; after two more weeks in Closing it is Closed. Real default
durations, on the dev server with time skipping."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.scenario import TIER1, Case

DAY = timedelta(days=1)
# Virtual time also runs with real time (activities, polling), so "just before" is a minute
# before: far more than a test's real run time, far less than any deadline.
MARGIN = timedelta(minutes=1)


# Also with the workflow sandbox off (CASES_WORKFLOW_SANDBOX=false), the faster way to run it.
@pytest.mark.parametrize(
    "worker_settings", [True, False], ids=["sandbox", "no-sandbox"], indirect=True
)
async def test_two_weeks_reminder_then_closing_then_closed(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("PCR")).open()
    await inbox.wait_for(Subject=case.number)  # the "case opened" email
    snap = await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    assert snap.next_deadline and snap.next_deadline.action == "pcr_reminder"
    entered = snap.status_since
    assert snap.next_deadline.at == entered + 14 * DAY
    assert [d.action for d in snap.timeline] == ["pcr_reminder", "pcr_closing", "closing_closed"]

    await case.pass_until(entered + 14 * DAY - MARGIN)
    assert not inbox.matching(Subject="Reminder")
    await case.pass_until(entered + 14 * DAY + MARGIN)
    [reminder] = await inbox.wait_for(Subject="Reminder", To="ann@alma.example")
    assert case.number in reminder["Subject"]
    snap = await case.wait(
        lambda s: s.next_deadline is not None and s.next_deadline.action == "pcr_closing"
    )
    assert snap.status == "Pending Customer Response"

    await case.pass_until(entered + 28 * DAY - MARGIN)
    assert (await case.settle(0.5)).status == "Pending Customer Response"
    await case.pass_until(entered + 28 * DAY + MARGIN)
    snap = await case.wait_status("Closing")
    assert snap.status_since == entered + 28 * DAY  # acts at its instant, to the second
    await inbox.wait_for(Subject="Closing")

    await case.pass_until(entered + 42 * DAY + MARGIN)
    await inbox.wait_for(Subject="Closed")
    result = await case.handle.result()
    assert result.status == "Closed"
    assert [h.to_status for h in result.history][-2:] == ["Closing", "Closed"]
    assert len(inbox.matching(Subject="Reminder")) == 1


async def test_a_reply_before_the_reminder_cancels_the_chain(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("PCR-reply")).open()
    await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    await case.pass_time(10 * DAY)
    snap = await case.reply("The report is attached.")
    assert snap.status == "Waiting for Process"
    assert snap.next_deadline is None and snap.timeline == []
    [comment] = await inbox.wait_for(To="support-team@example.org", Subject="comment")
    assert "The report is attached." in comment.get_content()

    await case.pass_time(30 * DAY)
    snap = await case.settle(0.5)
    assert snap.status == "Waiting for Process"
    assert not inbox.matching(Subject="reminder")


async def test_a_customer_comment_in_closing_reopens_the_case(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("reopen")).open()
    snap = await case.walk(("Tier 1 Analysis", TIER1), ("Closing", TIER1))
    assert snap.next_deadline and snap.next_deadline.to == "Closed"
    closes = snap.next_deadline.at
    assert closes == snap.status_since + 14 * DAY
    [closing] = await inbox.wait_for(Subject="Closing")
    body = closing.get_content()
    # The period of the case's policy, and the date.
    when = f"in 14 days (on {closes:%A} {closes.day} {closes:%B %Y}, {closes:%H:%M} UTC) unless"
    assert when in " ".join(body.split())

    await case.pass_time(13 * DAY)
    snap = await case.reply("Sorry, it still fails for e-books.")
    assert snap.status == "Waiting for Process"
    await case.pass_time(2 * DAY)
    assert (await case.settle(0.5)).status == "Waiting for Process"
    snap = await case.to("Tier 1 Analysis", TIER1)  # back to the owner tier
    assert snap.owner_tier == 1
