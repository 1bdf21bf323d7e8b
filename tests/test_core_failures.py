"""No wedged case (SPEC "Integrity"): whatever the pure core raises besides a ``Rejection`` (a
bug, a date out of range) becomes a rejection with reason ``internal``; the workflow task never
fails, the case answers ``snapshot``, and a deadline the core failed on waits for the next event
instead of failing again and again."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from starter.client import CaseRejected
from tests.scenario import TIER1, Case
from workflows import lifecycle
from workflows.contract import ApplyPolicy, PolicyOverrides, Status, TransitionRequest

POLICY = PolicyOverrides(closing_closed="1min")


# The core is replaced in the workflow's own module, so the worker runs unsandboxed here.
@pytest.mark.parametrize("worker_settings", [False], ids=["no-sandbox"], indirect=True)
async def test_a_failure_of_the_core_is_a_rejection_and_the_case_goes_on(
    env, case_worker, worker_settings, inbox, unique, monkeypatch
):
    real = lifecycle.decide

    def broken(
        state: lifecycle.CaseState, event: Any, now: datetime, *args: Any
    ) -> lifecycle.Decision:
        if getattr(event, "note", None) == "boom" or (
            isinstance(event, lifecycle.Due) and state.status is Status.CLOSING
        ):
            raise OverflowError("date value out of range")
        return real(state, event, now, *args)

    monkeypatch.setattr(lifecycle, "decide", broken)
    case = await Case(env, worker_settings.task_queue, unique("internal")).open(policy=POLICY)
    await case.to("Tier 1 Analysis", TIER1)

    boom = TransitionRequest(to=Status.PENDING_CUSTOMER_RESPONSE, actor=TIER1, note="boom")
    await case.handle.signal("transition", boom)
    snap = await case.wait(lambda s: bool(s.rejected))
    assert (snap.rejected[-1].reason, snap.status) == ("internal", "Tier 1 Analysis")
    assert "date value out of range" in snap.rejected[-1].message
    with pytest.raises(CaseRejected) as refused:
        await case.client.transition(case.number, boom)
    assert refused.value.reason == "internal"

    snap = await case.to("Closing", TIER1)
    closes = snap.status_since + timedelta(minutes=1)
    await case.pass_until(closes + timedelta(seconds=5))
    snap = await case.wait(lambda s: s.rejected[-1].event == "deadline closing_closed")
    assert (snap.rejected[-1].reason, snap.status) == ("internal", "Closing")

    # The core is mended; the next event wakes the parked deadline, which acts at once.
    monkeypatch.setattr(lifecycle, "decide", real)
    change = ApplyPolicy(policy=PolicyOverrides(pcr_reminder="2d"), actor=TIER1, reason="fix")
    await case.client.apply_policy(case.number, change)
    result = await case.handle.result()
    assert result.status == "Closed"
    failed = [
        e
        async for e in case.handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed == []
