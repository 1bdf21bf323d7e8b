"""A small typed client for other Python systems: open cases, send events, read snapshots.

Updates answer with the new snapshot or raise ``CaseRejected`` with the reason at once; signals
are fire-and-forget (a rejected signal is recorded in the case's snapshot). An unknown case number
is ``CaseNotFound``; any event for a closed case is ``CaseRejected`` with reason ``closed``.

::

    from starter.client import CaseClient
    from runtime.connection import connect

    cases = CaseClient(await connect())
    await cases.open(CaseInput(...))
    snapshot = await cases.transition("00123456", TransitionRequest(to="Tier 1 Analysis", ...))
    async for row in cases.find(status="Pending Customer Response"):
        print(row.case_number, row.next_deadline)
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from runtime.signing import Signer
from workflows import lifecycle, search
from workflows.contract import (
    CASE_ID_PREFIX,
    CASE_WORKFLOW,
    RELEASE_WORKFLOW,
    TASK_QUEUE,
    Actor,
    ApplyPolicy,
    CaseInput,
    CustomerReply,
    HandlerName,
    ReleaseInput,
    ReleaseShipped,
    ReleaseStatus,
    Reschedule,
    ShipNow,
    Snapshot,
    TierHandoff,
    TransitionRequest,
    case_workflow_id,
    release_workflow_id,
)

Event = TypeVar("Event", bound=BaseModel)


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
            case_number=execution.id.removeprefix(CASE_ID_PREFIX),
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


class BadQuery(ValueError):
    """A visibility query the client will not send: it would reach outside its parentheses."""


_QUOTES = "'\"`"


def grouped(query: str) -> str:
    """``(query)``: the caller's query as one group, refused unless its parentheses balance
    outside string literals, so that ``x) OR (y`` cannot escape the filter put before it."""
    depth, quote, escaped = 0, "", False
    for char in query:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in _QUOTES:
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise BadQuery(f"query has a ')' with no '(' before it: {query!r}")
    if quote:
        raise BadQuery(f"query has an unclosed string literal: {query!r}")
    if depth:
        raise BadQuery(f"query has an unclosed '(': {query!r}")
    return f"({query})"


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
    """A visibility query over the case search attributes; ``query`` is added as one group
    (``grouped``)."""
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
        parts.append(grouped(query))
    return " AND ".join(parts)


# The server refuses a start whose summary payload is over 400 bytes (``limit.userMetadata-
# SummarySize``) or whose details payload is over 20,000 (``limit.userMetadataDetailsSize``),
# counted as serialised: JSON quotes and escapes included, and an encrypting codec's envelope.
# The text is cut to these many bytes of JSON, measured with every non-ASCII character escaped
# (the largest any JSON converter writes), which leaves room for the rest.
SUMMARY_JSON_BYTES = 240
DETAILS_JSON_BYTES = 16_000
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f]+")


def fitted(text: str, limit: int) -> str:
    """``text`` on one line, cut (with "…") so that its JSON string is at most ``limit`` bytes."""
    text = _UNPRINTABLE.sub(" ", text)

    def size(candidate: str) -> int:
        return len(json.dumps(candidate))  # ASCII-escaped: characters are bytes

    if size(text) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits with the ellipsis
        middle = (low + high + 1) // 2
        if size(text[:middle] + "…") <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…"


def case_summary(case: CaseInput) -> str:
    """The one line the UI shows for the case's workflow, within the server's summary limit."""
    return fitted(
        f"Case {case.case_number} · {case.institution} · {case.priority} — {case.title}",
        SUMMARY_JSON_BYTES,
    )


def case_details(case: CaseInput) -> str:
    details = (
        f"**Case {case.case_number}** — {_UNPRINTABLE.sub(' ', case.title)}\n\n"
        f"- institution: {case.institution}\n- product: {case.product}\n"
        f"- priority: {case.priority}\n- contact: {case.contact_email}\n"
        f"- references: {case.references or 'none'}"
    )
    return (
        details
        if len(json.dumps(details)) <= DETAILS_JSON_BYTES
        else fitted(details, DETAILS_JSON_BYTES)
    )


class CaseClient:
    """``signer``: with trusted senders, every event, start and release signal goes signed."""

    def __init__(
        self, client: Client, task_queue: str = TASK_QUEUE, signer: Signer | None = None
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.signer = signer

    def signed(self, workflow_id: str, event: Event) -> Event:
        return self.signer.sign(workflow_id, event) if self.signer else event

    async def open(self, case: CaseInput) -> WorkflowHandle:
        """Start the case's workflow; a case number already in use is an error."""
        case = self.signed(case_workflow_id(case.case_number), case)
        try:
            state = lifecycle.open_case(case, datetime.now().astimezone()).state
        except lifecycle.Rejection as rejection:  # checked here too, to fail before starting
            raise CaseRejected(rejection.message, rejection.reason) from None
        values = search.case_values(lifecycle.case_record(state), None)
        try:
            return await self._start_case(case, values)
        except WorkflowAlreadyStartedError:
            raise CaseRejected(await self._exists(case.case_number), "duplicate") from None

    async def import_case(self, case: CaseInput) -> WorkflowHandle | None:
        """Start a case moved in from another help desk (``case.imported``); None when a case of
        this number was already imported with this input (a re-run), ``CaseRejected`` when the
        core refuses it or the number is another case's."""
        case = self.signed(case_workflow_id(case.case_number), case)
        try:
            state = lifecycle.import_case(case, datetime.now().astimezone()).state
        except lifecycle.Rejection as rejection:
            raise CaseRejected(rejection.message, rejection.reason) from None
        values = search.case_values(
            lifecycle.case_record(state),
            (due.at if (due := lifecycle.next_deadline(state)) else None),
        )
        try:
            return await self._start_case(case, values)
        except WorkflowAlreadyStartedError:
            if await self.opened_with(case):
                return None
            raise CaseRejected(
                f"case {case.case_number} exists with other data; not imported again", "exists"
            ) from None

    async def opened_with(self, case: CaseInput) -> bool:
        """Whether case ``case.case_number`` was opened with this start input (its proof aside)."""
        handle = self.client.get_workflow_handle(case_workflow_id(case.case_number))
        async for event in handle.fetch_history_events():
            first = event.workflow_execution_started_event_attributes.first_execution_run_id
            break
        else:
            return False
        if first and first != (await handle.describe()).run_id:
            handle = self.client.get_workflow_handle(handle.id, run_id=first)
        async for event in handle.fetch_history_events():
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [data] = await self.client.data_converter.decode(list(payloads), [dict])
            try:
                started = CaseInput.model_validate(data)
            except ValueError:
                return False
            exclude = {"proof"}
            return started.model_dump(exclude=exclude) == case.model_dump(exclude=exclude)
        return False

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
            static_summary=case_summary(case),
            static_details=case_details(case),
        )

    def handle(self, case_number: str) -> WorkflowHandle:
        return self.client.get_workflow_handle(case_workflow_id(case_number), result_type=Snapshot)

    async def snapshot(self, case_number: str) -> Snapshot:
        try:
            return await self.handle(case_number).query(HandlerName.SNAPSHOT, result_type=Snapshot)
        except RPCError as err:
            raise _translated(case_number, err) from None

    async def transition(self, case_number: str, request: TransitionRequest) -> Snapshot:
        return await self._update(case_number, HandlerName.TRANSITION, request)

    async def reply(self, case_number: str, reply: CustomerReply) -> Snapshot:
        return await self._update(case_number, HandlerName.CUSTOMER_REPLY, reply)

    async def handoff(self, case_number: str, handoff: TierHandoff) -> Snapshot:
        return await self._update(case_number, HandlerName.TIER_HANDOFF, handoff)

    async def apply_policy(self, case_number: str, change: ApplyPolicy) -> Snapshot:
        return await self._update(case_number, HandlerName.APPLY_POLICY, change)

    async def preview_policy(self, case_number: str, change: ApplyPolicy) -> Snapshot:
        """The case as it would be with ``change`` applied now; nothing changes."""
        try:
            return await self.handle(case_number).query(
                HandlerName.POLICY_PREVIEW, change, result_type=Snapshot
            )
        except WorkflowQueryFailedError as err:
            raise CaseRejected(str(err), "rejected") from None
        except RPCError as err:
            raise _translated(case_number, err) from None

    async def signal(self, case_number: str, name: str, event: BaseModel) -> None:
        event = self.signed(case_workflow_id(case_number), event)
        try:
            await self.handle(case_number).signal(name, event)
        except RPCError as err:
            raise _translated(case_number, err) from None

    async def _update(self, case_number: str, name: str, event: BaseModel) -> Snapshot:
        event = self.signed(case_workflow_id(case_number), event)
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

    # ---- releases ------------------------------------------------------------------------------

    async def schedule_release(
        self, release: ReleaseInput, actor: Actor | None = None
    ) -> WorkflowHandle:
        """Create the release, or move the instant of one that cases already registered with."""
        wid = release_workflow_id(release.release_id)
        move = Reschedule(ships_at=release.ships_at, actor=actor) if release.ships_at else None
        return await self.client.start_workflow(
            RELEASE_WORKFLOW,
            release,
            id=wid,
            task_queue=self.task_queue,
            start_signal=HandlerName.RESCHEDULE if move else None,
            start_signal_args=[self.signed(wid, move)] if move else [],
        )

    async def reschedule_release(
        self, release_id: str, ships_at: datetime, actor: Actor | None = None
    ) -> None:
        wid = release_workflow_id(release_id)
        move = self.signed(wid, Reschedule(ships_at=ships_at, actor=actor))
        await self.client.get_workflow_handle(wid).signal(HandlerName.RESCHEDULE, move)

    async def ship_now(self, release_id: str, actor: Actor | None = None) -> None:
        """Ship at once; with trusted senders, ``actor`` (staff) ships it, signed."""
        wid = release_workflow_id(release_id)
        handle = self.client.get_workflow_handle(wid)
        if actor is None:
            await handle.signal(HandlerName.SHIP_NOW)  # no payload: as before trusted senders
        else:
            await handle.signal(HandlerName.SHIP_NOW, self.signed(wid, ShipNow(actor=actor)))

    async def release_status(self, release_id: str) -> ReleaseStatus:
        handle = self.client.get_workflow_handle(release_workflow_id(release_id))
        return await handle.query(HandlerName.STATUS, result_type=ReleaseStatus)

    async def release_shipped(self, case_number: str, event: ReleaseShipped) -> None:
        await self.signal(case_number, HandlerName.RELEASE_SHIPPED, event)


def _translated(case_number: str, err: RPCError) -> Exception:
    """NOT_FOUND means one of two things: no such case, or a case that has completed."""
    if err.status is RPCStatusCode.NOT_FOUND:
        if "completed" in err.message:
            return CaseRejected(
                f"case {case_number} is closed; open a new case referencing it", "closed"
            )
        return CaseNotFound(f"no case {case_number} (no workflow {case_workflow_id(case_number)})")
    return err
