"""Moving in, on the worker: a case imported from another help desk keeps the clock it had
there. Real default durations, on the dev server with time skipping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.scenario import Case, case_input
from workflows.contract import Actor, ImportedCase

DAY = timedelta(days=1)
MARGIN = timedelta(minutes=1)
IMPORTER = Actor(role="importer", name="zendesk import")


async def import_case(case: Case, status: str, since: datetime) -> None:
    start = case_input(case.number).model_copy(
        update={
            "opened_by": IMPORTER,
            "imported": ImportedCase(status=status, status_since=since, source="ZD-4711"),
        }
    )
    assert await case.client.import_case(start) is not None


async def test_ten_days_waiting_the_reminder_comes_four_days_after_the_import(
    env, case_worker, worker_settings, inbox, unique
):
    case = Case(env, worker_settings.task_queue, unique("MOVED"))
    since = datetime.now(UTC).replace(microsecond=0) - 10 * DAY
    await import_case(case, "Pending Customer Response", since)
    snap = await case.wait(lambda s: s.next_deadline is not None)
    assert snap.status == "Pending Customer Response" and snap.status_since == since
    assert snap.next_deadline is not None and snap.next_deadline.at == since + 14 * DAY
    assert [h.actor.role for h in snap.history] == ["importer"]

    await case.pass_until(since + 14 * DAY - MARGIN)
    assert (await case.settle(0.5)).status == "Pending Customer Response"
    assert not inbox.messages  # no "opened" email
    await case.pass_until(since + 14 * DAY + MARGIN)
    [reminder] = await inbox.wait_for(Subject="Reminder")
    assert case.number in reminder["Subject"]
    await case.pass_until(since + 28 * DAY + MARGIN)
    snap = await case.wait_status("Closing")
    assert snap.status_since == since + 28 * DAY  # the guide's instant, as if it never moved


async def test_thirty_days_waiting_the_case_goes_to_closing_at_once_with_its_notice(
    env, case_worker, worker_settings, inbox, unique
):
    case = Case(env, worker_settings.task_queue, unique("LATE"))
    since = datetime.now(UTC) - 30 * DAY
    await import_case(case, "Pending Customer Response", since)
    snap = await case.wait_status("Closing")
    assert snap.history[-1].due == since + 28 * DAY  # due then, acted on import
    [closing] = await inbox.wait_for(Subject="Closing")
    assert case.number in closing["Subject"]
    assert not inbox.matching(Subject="Reminder") and not inbox.matching(Subject="opened")
    assert snap.next_deadline is not None
    assert snap.next_deadline.at - snap.status_since == 14 * DAY  # the full 14 days from now
