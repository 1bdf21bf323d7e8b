"""Whether a workflow task completed, read from its run's history (newest events first).

A case's ``record`` runs inside the workflow task that decided its messages. Should that task be
lost (its worker killed before it completed), the decisions were never kept: the retry replays
the history without them and decides anew, with whatever arrived meanwhile handled first, so it
may decide other messages. The task's started event (its id is the history's length in that
task) followed by a completed event is the proof that it was kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client

# Events read per page, newest first: a task confirmed moments after its record is on the first.
PAGE = 32
# ``workflow.now()`` is the started event's instant rounded to the microsecond, or a moment later
# in the same task (after a local activity's result).
CLOCK_SLACK = timedelta(milliseconds=1)


async def task_completed(
    client: Client, workflow_id: str, run_id: str, event_id: int, at: datetime
) -> bool | None:
    """True if the run's history holds the workflow task whose started event is ``event_id``
    (at or before ``at``) as completed; False if it failed, timed out or the event is another
    task's; None while it has not ended (its events not in history yet)."""
    started: HistoryEvent | None = None
    ended: HistoryEvent | None = None
    token = b""
    while True:
        response = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                maximum_page_size=PAGE,
                next_page_token=token,
            )
        )
        events = response.history.events
        for event in events:
            if event.event_id == event_id + 1:
                ended = event
            elif event.event_id == event_id:
                started = event
        token = response.next_page_token
        if not events or events[-1].event_id <= event_id or not token:
            break
    if ended is None:
        return None
    if (
        started is None
        or started.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        or started.event_time.ToDatetime().replace(tzinfo=UTC) > at + CLOCK_SLACK
    ):
        return False
    return ended.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
