"""Start a workflow in a carried state, as a continued run of itself: a test-side path only.

``SupportCase`` and ``Release`` take carried state only from a continue-as-new of their own
workflow (``workflow.info().continued_run_id`` set, the id matching). Tests that need thousands
of cases or registrations without thousands of events start a ``ContinueInto`` run under the
target's id on a test worker; it continues as new into the target type on the target's task
queue, so the target's first run is a continued one. (Anyone who can run a worker in the
namespace can do the same: namespace access is the outer trust boundary.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RawValue, WorkflowIDConflictPolicy
from temporalio.worker import Worker

SEED_WORKFLOW = "ContinueInto"


@workflow.defn(name=SEED_WORKFLOW, sandboxed=False)
class ContinueInto:
    @workflow.run
    async def run(self, target: str, task_queue: str, carried: RawValue) -> None:
        workflow.continue_as_new(carried, workflow=target, task_queue=task_queue)  # type: ignore[arg-type]


async def start_continued(
    client: Client,
    target: str,
    task_queue: str,
    seeds: Sequence[tuple[str, Any]],
    *,
    concurrency: int = 40,
) -> None:
    """Start each ``(workflow_id, carried)`` of ``seeds`` as a continued run of ``target`` and
    wait until every one has continued into it."""
    queue = f"seed-{uuid.uuid4().hex[:12]}"
    gate = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str, carried: Any) -> None:
        async with gate:
            handle = await client.start_workflow(
                SEED_WORKFLOW,
                args=[target, task_queue, carried],
                id=workflow_id,
                task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
            while (await handle.describe()).workflow_type != target:
                await asyncio.sleep(0.05)

    async with Worker(client, task_queue=queue, workflows=[ContinueInto]):
        await asyncio.gather(*(one(w, c) for w, c in seeds))
