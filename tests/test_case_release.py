"""Pending Release and Pending Customer Testing: two weeks after the release ships the case goes
to Closing, unless the customer switches to Pending Customer Testing, which closes by itself
after 11 months."""

from __future__ import annotations

from datetime import timedelta

from tests.scenario import CUSTOMER, TIER1, TIER2, Case
from workflows.contract import ReleaseShipped

DAY = timedelta(days=1)
MARGIN = timedelta(minutes=1)


async def to_development(case: Case) -> None:
    await case.to("Tier 1 Analysis", TIER1)
    await case.handoff(2, "defect_verification", TIER1)
    await case.walk(("Tier 2 Analysis", TIER2), ("Development", TIER2))


async def test_closing_two_weeks_after_the_release_ships(
    env, case_worker, worker_settings, inbox, unique
):
    release = unique("2026.12")
    case = await Case(env, worker_settings.task_queue, unique("rel")).open()
    await to_development(case)
    snap = await case.to("Pending Release", TIER2, release_id=release)
    assert snap.release_id == release and snap.next_deadline is None  # waits for the release
    [pending] = await inbox.wait_for(Subject="release")
    assert release in pending.get_content()

    await case.pass_time(20 * DAY)  # nothing happens while the release has not shipped
    assert (await case.settle(0.3)).status == "Pending Release"

    shipped_at = (await env.get_current_time(case.handle)).replace(microsecond=0)
    await case.client.release_shipped(
        case.number, ReleaseShipped(release_id=release, shipped_at=shipped_at)
    )
    snap = await case.wait(lambda s: s.release_shipped_at is not None)
    assert snap.release_shipped_at == shipped_at
    assert snap.next_deadline and snap.next_deadline.at == shipped_at + 14 * DAY
    await inbox.wait_for(Subject="shipped")

    # Shipped twice (a retried fan-out): one effect.
    await case.client.release_shipped(
        case.number, ReleaseShipped(release_id=release, shipped_at=shipped_at)
    )
    await case.pass_until(shipped_at + 14 * DAY - MARGIN)
    assert (await case.settle(0.3)).status == "Pending Release"
    await case.pass_until(shipped_at + 14 * DAY + MARGIN)
    snap = await case.wait_status("Closing")
    assert snap.status_since == shipped_at + 14 * DAY
    assert len(inbox.matching(Subject="shipped")) == 1


async def test_customer_testing_closes_after_eleven_months(
    env, case_worker, worker_settings, inbox, unique
):
    release = unique("2027.01")
    case = await Case(env, worker_settings.task_queue, unique("pct")).open()
    await to_development(case)
    await case.to("Pending Release", TIER2, release_id=release)
    shipped_at = (await env.get_current_time(case.handle)).replace(microsecond=0)
    await case.client.release_shipped(
        case.number, ReleaseShipped(release_id=release, shipped_at=shipped_at)
    )
    await case.wait(lambda s: s.release_shipped_at is not None)
    await case.pass_time(5 * DAY)

    snap = await case.to("Pending Customer Testing", CUSTOMER)  # not ready to close yet
    entered = snap.status_since
    eleven_months = entered.replace(
        year=entered.year + (entered.month + 10) // 12, month=(entered.month + 10) % 12 + 1
    )
    assert snap.next_deadline and snap.next_deadline.at == eleven_months
    await case.pass_until(eleven_months - MARGIN)
    assert (await case.settle(0.3)).status == "Pending Customer Testing"
    await case.pass_until(eleven_months + MARGIN)
    await inbox.wait_for(Subject="Closed")
    result = await case.handle.result()
    assert result.status == "Closed" and result.closed_at == eleven_months


async def test_from_closing_back_to_customer_testing_only_after_a_release(
    env, case_worker, worker_settings, unique
):
    release = unique("2027.02")
    case = await Case(env, worker_settings.task_queue, unique("pct-closing")).open()
    await to_development(case)
    await case.to("Pending Release", TIER2, release_id=release)
    now = await env.get_current_time(case.handle)
    await case.client.release_shipped(
        case.number, ReleaseShipped(release_id=release, shipped_at=now)
    )
    await case.wait(lambda s: s.release_shipped_at is not None)
    await case.pass_time(14 * DAY + MARGIN)
    await case.wait_status("Closing")
    snap = await case.to("Pending Customer Testing", CUSTOMER)
    assert snap.status == "Pending Customer Testing"
