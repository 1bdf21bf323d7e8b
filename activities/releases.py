"""Release activities: a case registers with its release; a shipped release tells its cases."""

from __future__ import annotations

import asyncio

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from workflows.contract import (
    RELEASE_WORKFLOW,
    FanOut,
    FanOutResult,
    Register,
    RegisterCase,
    ReleaseInput,
    ReleaseShipped,
    case_workflow_id,
    release_workflow_id,
)

log = structlog.get_logger()

# Signals in flight at once during a fan-out: enough to keep the server busy on two cores.
CONCURRENCY = 64
# Heartbeat (the checkpoint a retried attempt resumes from) after this many cases.
CHECKPOINT = 100


class ReleaseActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="register_with_release")
    async def register_with_release(self, effect: Register) -> None:
        # Signal-with-start: the first case of a release creates its (not yet scheduled) workflow.
        await self._client.start_workflow(
            RELEASE_WORKFLOW,
            ReleaseInput(release_id=effect.release_id),
            id=release_workflow_id(effect.release_id),
            task_queue=activity.info().task_queue,
            start_signal="register_case",
            start_signal_args=[RegisterCase(case_number=effect.case_number)],
        )

    @activity.defn(name="fan_out_release")
    async def fan_out_release(self, batch: FanOut) -> FanOutResult:
        details = activity.info().heartbeat_details
        done, skipped = (int(details[0]), int(details[1])) if details else (0, 0)
        event = ReleaseShipped(release_id=batch.release_id, shipped_at=batch.shipped_at)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def tell(case_number: str) -> bool:
            async with gate:
                handle: WorkflowHandle = self._client.get_workflow_handle(
                    case_workflow_id(case_number)
                )
                try:
                    await handle.signal("release_shipped", event)
                    return True
                except RPCError as err:
                    if err.status is RPCStatusCode.NOT_FOUND:  # closed or gone: it moved on
                        return False
                    raise

        cases = batch.case_numbers
        while done < len(cases):
            chunk = cases[done : done + CHECKPOINT]
            results = await asyncio.gather(*(tell(c) for c in chunk))
            done += len(chunk)
            skipped += results.count(False)
            activity.heartbeat(done, skipped)
        log.info(
            "release fan-out batch done",
            release_id=batch.release_id,
            cases=len(cases),
            skipped=skipped,
        )
        return FanOutResult(signalled=len(cases) - skipped, skipped=skipped)
