"""A case replays however the server groups its events into activations.

A workflow task that issued no command (a refused signal) may be handed to a later worker again,
together with the next event, in one activation, or on its own, as it first ran: seen in the
soak (seed 40001) when a worker was killed while an update's task was pending. The case must
issue the same commands either way, or its history no longer replays and it is stuck for good
(``TMPRL1100``). This test runs a case through that shape on the real server, then replays its
history both as recorded and with the refused signal's empty task folded into the next one."""

from __future__ import annotations

import json
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from tests.reliability.harness import wait_until
from tests.reliability.test_replay import replayer
from tests.scenario import TIER1, Case
from workflows.case import SupportCase
from workflows.contract import TransitionRequest
from workflows.release import Release

SIGNALED = "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED"
TASK_EVENTS = (
    "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED",
    "EVENT_TYPE_WORKFLOW_TASK_STARTED",
    "EVENT_TYPE_WORKFLOW_TASK_COMPLETED",
)


def fold_empty_tasks_after_signals(history: WorkflowHistory) -> WorkflowHistory:
    """The history as a server that hands each signal's command-less task over again with the
    next event would replay it: every signal's own task that issued nothing is removed."""
    events = json.loads(history.to_json())["events"]
    kept: list[dict[str, Any]] = []
    index = 0
    while index < len(events):
        event = events[index]
        kept.append(event)
        window = [e["eventType"] for e in events[index + 1 : index + 5]]
        empty = window[:3] == list(TASK_EVENTS) and window[3:4] in (
            [],
            [SIGNALED],
            [TASK_EVENTS[0]],
        )
        if event["eventType"] == SIGNALED and empty and index + 4 < len(events):
            index += 4
            continue
        index += 1
    renumbered = {event["eventId"]: str(n) for n, event in enumerate(kept, 1)}

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("EventId") and isinstance(value, str) and value in renumbered:
                    node[key] = renumbered[value]
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(kept)
    for event in kept:
        event["eventId"] = renumbered[event["eventId"]]
    return WorkflowHistory.from_json(history.workflow_id, {"events": kept})


async def test_a_refused_signal_then_an_update_replays_however_grouped(
    env, case_worker, worker_settings, inbox, unique
) -> None:
    case = await Case(env, worker_settings.task_queue, unique("regroup")).open()

    async def settled() -> bool:
        """No activity in flight and no workflow task pending: every lane is waiting again."""
        described = (await case.handle.describe()).raw_description
        return not described.pending_activities and not described.HasField("pending_workflow_task")

    async def what() -> str:
        return str(await case.handle.describe())

    await wait_until(settled, 30, what)
    await case.to("Tier 1 Analysis", TIER1)
    await wait_until(settled, 30, what)
    # Refused (not a move of the lifecycle): its workflow task issues no command.
    await case.handle.signal("transition", TransitionRequest(to="Closed", actor=TIER1))

    async def refused() -> bool:
        return bool((await case.snapshot()).rejected)

    await wait_until(refused, 30, what)
    await wait_until(settled, 30, what)
    # The next event moves the case: a record, an email, the search attributes and a timer.
    await case.to("Pending Customer Response", TIER1)
    await inbox.wait_for(Subject="information")
    await wait_until(settled, 30, what)
    history = await case.handle.fetch_history()
    folded = fold_empty_tasks_after_signals(history)
    assert len(folded.events) == len(history.events) - 3, "the refused signal's task was folded"
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)
    await replayer(SupportCase, Release).replay_workflow(history)
    await replayer(SupportCase, Release).replay_workflow(folded)
