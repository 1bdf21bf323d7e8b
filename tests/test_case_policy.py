"""Changing the policy of open cases (SPEC "Changing the policy"): the organisation's default for
new cases, an opener's override, and ``apply_policy`` on a case that already waits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from starter.client import CaseRejected
from tests.scenario import DEV, TIER1, Case
from worker import build_worker
from workflows.contract import ApplyPolicy, PolicyOverrides

DAY = timedelta(days=1)
MARGIN = timedelta(minutes=1)


def change(reason: str = "a faster reminder", **fields: str) -> ApplyPolicy:
    return ApplyPolicy(policy=PolicyOverrides(**fields), actor=TIER1, reason=reason)


async def task_failures(handle: Any) -> list[str]:
    return [
        str(e.workflow_task_failed_event_attributes.failure.message)
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def test_a_reminder_moved_to_three_days_comes_three_days_after_entry(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("pol-3d")).open()
    snap = await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    entered = snap.status_since
    await case.pass_time(DAY)

    snap = await case.client.apply_policy(case.number, change(pcr_reminder="3d"))
    assert snap.next_deadline and snap.next_deadline.at == entered + 3 * DAY
    assert str(snap.policy.pcr_reminder) == "3d"
    [recorded] = snap.policy_changes
    assert (recorded.actor.role, recorded.reason) == ("tier1", "a faster reminder")
    assert [(c.field, c.old, c.new) for c in recorded.changes] == [("pcr_reminder", "14d", "3d")]

    await case.pass_until(entered + 3 * DAY - MARGIN)
    assert not inbox.matching(Subject="Reminder")
    await case.pass_until(entered + 3 * DAY + MARGIN)
    await inbox.wait_for(Subject="Reminder")
    rows = await case_worker.policy_changes(case.number)
    assert [(r.seq, r.reason) for r in rows] == [(recorded.seq, "a faster reminder")]
    assert await task_failures(case.handle) == []


async def test_a_closing_moved_into_the_past_moves_the_case_at_once(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("pol-past")).open()
    await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    await case.pass_time(20 * DAY)
    await inbox.wait_for(Subject="Reminder")  # at 14 days, as the old policy said

    await case.client.apply_policy(case.number, change("shorter wait", pcr_closing="15d"))
    snap = await case.wait_status("Closing")
    assert snap.history[-1].actor.role == "system"
    await inbox.wait_for(Subject="Closing")
    assert len(inbox.matching(Subject="Reminder")) == 1  # acted in this stay: never again


async def test_a_bad_policy_is_refused_and_the_case_goes_on(
    env, case_worker, worker_settings, unique
):
    case = await Case(env, worker_settings.task_queue, unique("pol-bad")).open()
    await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    with pytest.raises(CaseRejected) as refused:
        await case.client.apply_policy(case.number, change(pcr_reminder="40d"))
    assert refused.value.reason == "policy"
    assert "pcr_reminder (40d) must come before pcr_closing (28d)" in str(refused.value)
    with pytest.raises(CaseRejected) as wrong_role:
        await case.client.apply_policy(
            case.number,
            ApplyPolicy(policy=PolicyOverrides(pcr_reminder="3d"), actor=DEV, reason="not mine"),
        )
    assert wrong_role.value.reason == "wrong_role"

    # As a signal: recorded, never a failed workflow task.
    await case.handle.signal(
        "apply_policy", {"policy": {"pcr_closing": "7d"}, "actor": TIER1, "reason": "x"}
    )
    snap = await case.wait(lambda s: bool(s.rejected))
    assert snap.rejected[-1].reason == "policy"
    assert "must come before pcr_closing (7d)" in snap.rejected[-1].message
    assert str(snap.policy.pcr_closing) == "28d"
    assert await task_failures(case.handle) == []


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"closing_closed": "999999w"}, "closing_closed is 999999w"),
        ({"work_plan_review": "30s"}, "work_plan_review is 30s"),
    ],
    ids=["longer than ten years", "shorter than a minute"],
)
async def test_a_policy_out_of_bounds_at_open_fails_the_start_with_the_reason(
    env, worker_settings, store, inbox, unique, policy, words
):
    number = unique("pol-open")
    production = worker_settings.model_copy(update={"policy_shortest": "1min"})
    async with build_worker(env.client, production, store):
        await _open_out_of_bounds(env, production, store, inbox, number, policy, words)


async def _open_out_of_bounds(
    env: Any, worker_settings: Any, store: Any, inbox: Any, number: str, policy: Any, words: str
) -> None:
    handle = await env.client.start_workflow(
        "SupportCase",
        {
            "case_number": number,
            "institution": "Alma University",
            "product": "Alma",
            "priority": "normal",
            "title": "Loans report shows wrong totals",
            "contact_email": "ann@alma.example",
            "opened_by": TIER1.model_dump(),
            "policy": policy,
        },
        id=f"case-{number}",
        task_queue=worker_settings.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "invalid case input" in message and words in message
    assert await task_failures(handle) == []
    assert await store.get_case(number) is None  # no effect ran
    assert not inbox.matching(Subject=number)


async def test_the_default_policy_changes_new_cases_only(
    env, worker_settings, store, inbox, unique
):
    first = worker_settings.model_copy(
        update={"default_policy": "pcr_reminder=10d,pcr_closing=20d"}
    )
    async with build_worker(env.client, first, store):
        old = await Case(env, first.task_queue, unique("pol-old")).open()
        # A staff opener's override still wins over the default.
        own = await Case(env, first.task_queue, unique("pol-own")).open(
            policy=PolicyOverrides(pcr_reminder="3d"), opened_by=TIER1
        )
        snap = await old.wait(lambda s: bool(s.policy_changes))
        assert (str(snap.policy.pcr_reminder), str(snap.policy.pcr_closing)) == ("10d", "20d")
        assert "CASES_DEFAULT_POLICY" in snap.policy_changes[0].reason
        own_snap = await own.wait(lambda s: bool(s.policy_changes))
        assert (str(own_snap.policy.pcr_reminder), str(own_snap.policy.pcr_closing)) == (
            "3d",
            "20d",
        )

    # The organisation changes its default; the restarted worker replays the old case.
    second = first.model_copy(update={"default_policy": "pcr_reminder=5d"})
    async with build_worker(env.client, second, store):
        snap = await old.snapshot()
        assert (str(snap.policy.pcr_reminder), str(snap.policy.pcr_closing)) == ("10d", "20d")
        new = await Case(env, second.task_queue, unique("pol-new")).open()
        snap = await new.wait(lambda s: bool(s.policy_changes))
        assert (str(snap.policy.pcr_reminder), str(snap.policy.pcr_closing)) == ("5d", "28d")
        # The old case runs on under the policy it opened with.
        snap = await old.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
        assert snap.next_deadline and snap.next_deadline.at == snap.status_since + 10 * DAY
        assert await task_failures(old.handle) == []
