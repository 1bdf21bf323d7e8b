"""A small typed client for other Python systems: open cases, send events, read snapshots.

Updates answer with the new snapshot or raise ``CaseRejected`` with the reason at once; signals
are fire-and-forget (a rejected signal is recorded in the case's snapshot). An unknown case number
is ``CaseNotFound``; any event for a closed case is ``CaseRejected`` with reason ``closed``.

::

    from starter.client import CaseClient
    from starter.connection import connect

    cases = CaseClient(await connect())
    await cases.open(CaseInput(...))
    snapshot = await cases.transition("00123456", TransitionRequest(to="Tier 1 Analysis", ...))
    async for row in cases.find(status="Pending Customer Response"):
        print(row.case_number, row.next_deadline)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

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


class CaseNotFound(LookupError):
    """No case has this number (no workflow ``case-<number>``)."""


class CaseRow(BaseModel):
    """One case as a visibility query lists it: its search attributes, no history."""

    case_number: str
    status: str | None
    priority: str | None
    institution: str | None
    product: str | None
    owner_tier: str | None
    release_id: str | None
    next_deadline: datetime | None
    workflow_status: str  # Running, Completed, ...
    opened_at: datetime | None
    closed_at: datetime | None

    @classmethod
    def of(cls, execution: WorkflowExecution) -> CaseRow:
        attrs = execution.typed_search_attributes
        status = execution.status
        return cls(
            case_number=execution.id.removeprefix("case-"),
            status=attrs.get(search.CASE_STATUS),
            priority=attrs.get(search.CASE_PRIORITY),
            institution=attrs.get(search.CASE_INSTITUTION),
            product=attrs.get(search.CASE_PRODUCT),
            owner_tier=attrs.get(search.CASE_OWNER_TIER),
            release_id=attrs.get(search.CASE_RELEASE),
            next_deadline=attrs.get(search.CASE_NEXT_DEADLINE),
            workflow_status=(
                status.name.replace("_", " ").title()
                if isinstance(status, WorkflowExecutionStatus)
                else "Unknown"
            ),
            opened_at=execution.start_time,
            closed_at=execution.close_time,
        )


def quoted(value: str) -> str:
    """A string literal of Temporal's visibility query language."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def case_query(
    *,
    status: str | list[str] | None = None,
    institution: str | None = None,
    release_id: str | None = None,
    query: str | None = None,
) -> str:
    """A visibility query over the case search attributes; ``query`` is added as it is."""
    parts: list[str] = []
    statuses = [status] if isinstance(status, str) else list(status or [])
    if len(statuses) == 1:
        parts.append(f"{search.CASE_STATUS.name} = {quoted(statuses[0])}")
    elif statuses:
        parts.append(f"{search.CASE_STATUS.name} IN ({', '.join(map(quoted, statuses))})")
    if institution:
        parts.append(f"{search.CASE_INSTITUTION.name} = {quoted(institution)}")
    if release_id:
        parts.append(f"{search.CASE_RELEASE.name} = {quoted(release_id)}")
    if query:
        parts.append(f"({query})")
    return " AND ".join(parts)


class CaseClient:
    def __init__(self, client: Client, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    async def open(self, case: CaseInput) -> WorkflowHandle:
        """Start the case's workflow; a case number already in use is an error."""
        try:
            state = lifecycle.open_case(case, datetime.now().astimezone()).state
        except lifecycle.Rejection as rejection:  # checked here too, to fail before starting
            raise CaseRejected(rejection.message, rejection.reason) from None
        values = search.case_values(lifecycle.case_record(state), None)
        try:
            return await self._start_case(case, values)
        except WorkflowAlreadyStartedError:
            raise CaseRejected(await self._exists(case.case_number), "duplicate") from None

    async def _exists(self, case_number: str) -> str:
        """Why a case number cannot be opened again: it names one case for all time."""
        try:
            desc = await self.client.get_workflow_handle(case_workflow_id(case_number)).describe()
            closed = desc.close_time
        except RPCError:
            closed = None  # gone from the server's retention: still the first case's number
        when = f"closed on {closed:%Y-%m-%d}" if closed else "open"
        return f"case {case_number} exists ({when}); open a new case that references it"

    async def _start_case(self, case: CaseInput, values: dict[str, object]) -> WorkflowHandle:
        return await self.client.start_workflow(
            CASE_WORKFLOW,
            case,
            id=case_workflow_id(case.case_number),
            task_queue=self.task_queue,
            result_type=Snapshot,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=search.typed(values),
            static_summary=(
                f"Case {case.case_number} · {case.institution} · {case.priority} — {case.title}"
            ),
            static_details=(
                f"**Case {case.case_number}** — {case.title}\n\n"
                f"- institution: {case.institution}\n- product: {case.product}\n"
                f"- priority: {case.priority}\n- contact: {case.contact_email}\n"
                f"- references: {case.references or 'none'}"
            ),
        )

    def handle(self, case_number: str) -> WorkflowHandle:
        return self.client.get_workflow_handle(case_workflow_id(case_number), result_type=Snapshot)

    async def snapshot(self, case_number: str) -> Snapshot:
        try:
            return await self.handle(case_number).query("snapshot", result_type=Snapshot)
        except RPCError as err:
            raise _translated(case_number, err) from None

    async def transition(self, case_number: str, request: TransitionRequest) -> Snapshot:
        return await self._update(case_number, "transition", request)

    async def reply(self, case_number: str, reply: CustomerReply) -> Snapshot:
        return await self._update(case_number, "customer_reply", reply)

    async def handoff(self, case_number: str, handoff: TierHandoff) -> Snapshot:
        return await self._update(case_number, "tier_handoff", handoff)

    async def signal(self, case_number: str, name: str, event: BaseModel) -> None:
        try:
            await self.handle(case_number).signal(name, event)
        except RPCError as err:
            raise _translated(case_number, err) from None

    async def _update(self, case_number: str, name: str, event: BaseModel) -> Snapshot:
        try:
            return await self.handle(case_number).execute_update(name, event, result_type=Snapshot)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                reason = str(cause.details[0]) if cause.details else None
                raise CaseRejected(cause.message, reason) from None
            raise
        except RPCError as err:
            raise _translated(case_number, err) from None

    async def find(
        self, *, limit: int | None = None, page_size: int = 100, **criteria: Any
    ) -> AsyncIterator[CaseRow]:
        """Cases by ``case_query`` criteria (``status=``, ``institution=``, ``release_id=``,
        ``query=``), newest first, fetched page by page."""
        query = case_query(**criteria)
        full = f'WorkflowType = "{CASE_WORKFLOW}"' + (f" AND ({query})" if query else "")
        async for execution in self.client.list_workflows(full, limit=limit, page_size=page_size):
            yield CaseRow.of(execution)

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


def _translated(case_number: str, err: RPCError) -> Exception:
    """NOT_FOUND means one of two things: no such case, or a case that has completed."""
    if err.status is RPCStatusCode.NOT_FOUND:
        if "completed" in err.message:
            return CaseRejected(
                f"case {case_number} is closed; open a new case referencing it", "closed"
            )
        return CaseNotFound(f"no case {case_number} (no workflow {case_workflow_id(case_number)})")
    return err
