"""Pending Work Plan: only for normal or low priority and one institution; reassessed every
three months; after 24 months without a work plan the case goes to Closing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from starter.client import CaseRejected
from tests.scenario import DEV, TIER1, TIER2, Case, update_events

# Virtual time also runs with real time (activities, polling), so "just before" is a minute
# before: far more than a test's real run time, far less than any deadline.
MARGIN = timedelta(minutes=1)


async def to_tier2_analysis(case: Case) -> None:
    await case.to("Tier 1 Analysis", TIER1)
    await case.handoff(2, "defect_verification", TIER1, note="reproduced on sandbox")
    await case.to("Tier 2 Analysis", TIER2)


@pytest.mark.parametrize(
    ("fields", "because"),
    [
        ({"priority": "high"}, "normal or low priority"),
        ({"priority": "critical"}, "normal or low priority"),
        ({"affects_multiple_institutions": True}, "several institutions"),
    ],
)
async def test_work_plan_is_refused_for_urgent_or_widespread_defects(
    env, case_worker, worker_settings, unique, fields, because
):
    case = await Case(env, worker_settings.task_queue, unique("wp-guard")).open(**fields)
    await to_tier2_analysis(case)
    await case.to("Development", TIER2)
    updates_before = await update_events(case.handle)
    with pytest.raises(CaseRejected) as rejected:
        await case.to("Pending Work Plan", DEV)  # Development decides, within the guards
    message = str(rejected.value)
    assert because in message
    assert "Development" in message and "Pending Work Plan" in message
    assert rejected.value.reason == "guard"
    # A rejected update leaves no trace in the workflow's history.
    assert await update_events(case.handle) == updates_before
    assert (await case.snapshot()).status == "Development"


async def test_reassessed_quarterly_then_closing_after_24_months(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("wp")).open(priority="low")
    await to_tier2_analysis(case)
    await case.to("Development", TIER2)
    snap = await case.to("Pending Work Plan", DEV)
    reviews = [d for d in snap.timeline if d.action == "work_plan_review"]
    assert len(reviews) == 7  # months 3, 6, ..., 21; the 24th month is the expiry itself
    assert snap.timeline[7].action == "work_plan_expiry"

    first_review = reviews[0].at
    await case.pass_until(first_review - MARGIN)
    await case.settle(0.3)
    assert not inbox.matching(Subject="reassess")
    await case.pass_time(2 * MARGIN)
    # Reassessed "by Support and Development": each team gets the notice.
    [notice] = await inbox.wait_for(Subject="reassess", To="support-team@example.org")
    assert case.number in notice["Subject"]
    await inbox.wait_for(Subject="reassess", To="development-team@example.org")

    expiry = snap.timeline[7].at
    await case.pass_until(expiry - MARGIN)
    await inbox.wait_for(7, Subject="reassess", To="support-team@example.org")
    assert (await case.settle(0.3)).status == "Pending Work Plan"
    await case.pass_time(2 * MARGIN)
    snap = await case.wait_status("Closing")
    assert snap.status_since == expiry
    assert len(inbox.matching(Subject="reassess", To="support-team@example.org")) == 7
    assert len(inbox.matching(Subject="reassess", To="development-team@example.org")) == 7
