"""A case's local activities (the policy read and the record of each decision) that outlast the
workflow task: SDK core heartbeats the task, the result lands in a later task than the one that
asked for it, and events arrive in between. The history must replay as recorded (a replay hands
the result over within its marker's task)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from tests.reliability.harness import wait_until
from tests.reliability.test_replay import replayer
from tests.scenario import CUSTOMER, TIER1, case_input
from worker import build_worker
from workflows.case import SupportCase
from workflows.contract import (
    CASE_WORKFLOW,
    CustomerReply,
    Snapshot,
    TransitionRequest,
    case_workflow_id,
)
from workflows.release import Release

# Short enough that the first task heartbeats while the local activity runs.
TASK_TIMEOUT = timedelta(seconds=2)
SLOW = TASK_TIMEOUT.total_seconds() * 1.5


class SlowLocalActivities(Interceptor):
    """Every local activity takes ``SLOW`` seconds: a slow store or a loaded worker."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Slow(next)


class _Slow(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().is_local:
            await asyncio.sleep(SLOW)
        return await self.next.execute_activity(input)


def records(history: WorkflowHistory) -> int:
    """The local activities the run has recorded (policy read, then one per record)."""
    return sum(
        1
        for e in history.events
        if e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )


def heartbeats(history: WorkflowHistory) -> int:
    """Workflow tasks completed with nothing but a request for the next (core's heartbeat)."""
    kinds = [e.event_type for e in history.events]
    return sum(
        1
        for i, kind in enumerate(kinds[:-1])
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        and kinds[i + 1] == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
    )


async def until_recorded(handle: WorkflowHandle, count: int) -> None:
    async def done() -> bool:
        return records(await handle.fetch_history()) >= count

    async def history() -> str:
        return str([e.event_type for e in (await handle.fetch_history()).events])

    await wait_until(done, 60, history)


async def test_slow_local_activities_at_open_and_after_replay(
    env, worker_settings, store, unique
) -> None:
    number = unique("slow-la")
    async with build_worker(
        env.client, worker_settings, store, interceptors=[SlowLocalActivities()]
    ):
        handle = await env.client.start_workflow(
            CASE_WORKFLOW,
            case_input(number),
            id=case_workflow_id(number),
            task_queue=worker_settings.task_queue,
            task_timeout=TASK_TIMEOUT,
        )
        await until_recorded(handle, 2)  # the policy read, the opening's record
        # An event while a record is on its way, and one the record then carries.
        await handle.signal("transition", TransitionRequest(to="Tier 1 Analysis", actor=TIER1))
        await handle.query("snapshot")
        await handle.signal("customer_reply", CustomerReply(text="More logs.", actor=CUSTOMER))
        await until_recorded(handle, 3)
        snapshot = await handle.query("snapshot", result_type=Snapshot)
        await handle.terminate("test over")
    history = await handle.fetch_history()
    assert heartbeats(history) >= 1, "a local activity outlasted its workflow task"
    assert snapshot.status == "Tier 1 Analysis"  # the reply is kept as a comment there
    await replayer(SupportCase, Release).replay_workflow(history)
