"""A case decides every patch before its first await. A patch asked after the policy's local
activity was recorded in a later workflow task than the activity's marker whenever a query or a
task heartbeat came while the activity ran, and replay, which hands the activity's result over
within the marker's task, then asked the patch before it knew of it: "patch marker encountered
... but there is no corresponding change command", on every replay of the case, for good."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from tests.reliability.harness import wait_until
from tests.reliability.test_replay import (
    FILES,
    HISTORIES,
    load,
    replayer,
    workflow_type,
)
from tests.scenario import case_input
from worker import build_worker
from workflows.case import SupportCase
from workflows.contract import CASE_WORKFLOW, case_workflow_id
from workflows.release import Release

# Short enough that the first task heartbeats while the local activity runs.
TASK_TIMEOUT = timedelta(seconds=2)
SLOW = TASK_TIMEOUT.total_seconds() * 1.5


class SlowLocalActivities(Interceptor):
    """The policy read at open (a local activity) takes ``SLOW`` seconds: a slow store or a
    loaded worker."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Slow(next)


class _Slow(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().is_local:
            await asyncio.sleep(SLOW)
        return await self.next.execute_activity(input)


async def claim_scheduled(handle: WorkflowHandle) -> None:
    """Until the claim's activity is scheduled: the policy read and the patches are recorded."""

    async def scheduled() -> bool:
        events = (await handle.fetch_history()).events
        return any(e.HasField("activity_task_scheduled_event_attributes") for e in events)

    async def history() -> str:
        return str([e.event_type for e in (await handle.fetch_history()).events])

    await wait_until(scheduled, 60, history)


def late_patches(history: WorkflowHistory) -> list[str]:
    """Patch markers recorded after the run's first workflow task: each one a replay may miss."""
    completed = 0
    late = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            completed += 1
        elif event.marker_recorded_event_attributes.marker_name == "core_patch" and completed > 1:
            late.append(f"event {event.event_id}: {sorted(patches_of(event))}")
    return late


def patches_of(event: HistoryEvent) -> set[str]:
    payloads = event.marker_recorded_event_attributes.details["patch-data"].payloads
    return {json.loads(p.data)["id"] for p in payloads}


async def test_a_slow_policy_read_at_open_replays(env, worker_settings, store, unique) -> None:
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
        await claim_scheduled(handle)
    history = await handle.fetch_history()
    assert late_patches(history) == []
    await replayer(SupportCase, Release).replay_workflow(history)


CASE_HISTORIES = [
    p
    for p in [*FILES, *sorted((HISTORIES / "trusted").glob("*.case-*.json"))]
    if workflow_type(load(p)) == "SupportCase"
]


@pytest.mark.parametrize("path", CASE_HISTORIES, ids=lambda p: p.stem)
def test_every_captured_case_decides_its_patches_in_its_first_task(path: Path) -> None:
    assert late_patches(load(path)) == []
