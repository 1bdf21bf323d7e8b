"""A small typed client for other Python systems: open cases, send events, read snapshots.

Updates answer with the new snapshot or raise ``CaseRejected`` with the reason at once; signals
are fire-and-forget (a rejected signal is recorded in the case's snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from workflows import lifecycle, search
from workflows.contract import (
    CASE_WORKFLOW,
    RELEASE_WORKFLOW,
    TASK_QUEUE,
    CaseInput,
    CustomerReply,
    ReleaseInput,
    ReleaseShipped,
    ReleaseStatus,
    Reschedule,
    Snapshot,
    TierHandoff,
    TransitionRequest,
    case_workflow_id,
    release_workflow_id,
)


class CaseRejected(Exception):
    """The case refused an event; ``reason`` is the short code, the message says why."""

    def __init__(self, message: str, reason: str | None) -> None:
        super().__init__(message)
        self.reason = reason


class CaseClient:
    def __init__(self, client: Client, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    async def open(self, case: CaseInput) -> WorkflowHandle:
        """Start the case's workflow; a case number already in use is an error."""
        state = lifecycle.open_case(case, datetime.now().astimezone()).state
        values = search.case_values(lifecycle.case_record(state), None)
        return await self.client.start_workflow(
            CASE_WORKFLOW,
            case,
            id=case_workflow_id(case.case_number),
            task_queue=self.task_queue,
            result_type=Snapshot,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=search.typed(values),
            static_summary=f"Case {case.case_number} · {case.institution} · {case.priority} — {case.title}",
            static_details=(
                f"**Case {case.case_number}** — {case.title}\n\n"
                f"- institution: {case.institution}\n- product: {case.product}\n"
                f"- priority: {case.priority}\n- contact: {case.contact_email}\n"
                f"- references: {case.references or 'none'}"
            ),
        )

    def handle(self, case_number: str) -> WorkflowHandle:
        return self.client.get_workflow_handle(case_workflow_id(case_number))

    async def snapshot(self, case_number: str) -> Snapshot:
        return await self.handle(case_number).query("snapshot", result_type=Snapshot)

    async def transition(self, case_number: str, request: TransitionRequest) -> Snapshot:
        return await self._update(case_number, "transition", request)

    async def reply(self, case_number: str, reply: CustomerReply) -> Snapshot:
        return await self._update(case_number, "customer_reply", reply)

    async def handoff(self, case_number: str, handoff: TierHandoff) -> Snapshot:
        return await self._update(case_number, "tier_handoff", handoff)

    async def signal(self, case_number: str, name: str, event: BaseModel) -> None:
        await self.handle(case_number).signal(name, event)

    async def _update(self, case_number: str, name: str, event: BaseModel) -> Snapshot:
        try:
            return await self.handle(case_number).execute_update(name, event, result_type=Snapshot)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                reason = str(cause.details[0]) if cause.details else None
                raise CaseRejected(cause.message, reason) from None
            raise

    async def list(self, query: str, limit: int | None = None) -> AsyncIterator[WorkflowExecution]:
        """Cases matching a visibility query, e.g. ``CaseStatus = "Closing"``, paged by the SDK."""
        full = f'WorkflowType = "{CASE_WORKFLOW}"' + (f" AND ({query})" if query else "")
        async for execution in self.client.list_workflows(full, limit=limit):
            yield execution

    # ---- releases ------------------------------------------------------------------------------

    async def schedule_release(self, release: ReleaseInput) -> WorkflowHandle:
        """Create the release, or move the instant of one that cases already registered with."""
        return await self.client.start_workflow(
            RELEASE_WORKFLOW,
            release,
            id=release_workflow_id(release.release_id),
            task_queue=self.task_queue,
            start_signal="reschedule" if release.ships_at else None,
            start_signal_args=[Reschedule(ships_at=release.ships_at)] if release.ships_at else [],
        )

    async def reschedule_release(self, release_id: str, ships_at: datetime) -> None:
        handle = self.client.get_workflow_handle(release_workflow_id(release_id))
        await handle.signal("reschedule", Reschedule(ships_at=ships_at))

    async def ship_now(self, release_id: str) -> None:
        await self.client.get_workflow_handle(release_workflow_id(release_id)).signal("ship_now")

    async def release_status(self, release_id: str) -> ReleaseStatus:
        handle = self.client.get_workflow_handle(release_workflow_id(release_id))
        return await handle.query("status", result_type=ReleaseStatus)

    async def release_shipped(self, case_number: str, event: ReleaseShipped) -> None:
        await self.signal(case_number, "release_shipped", event)
