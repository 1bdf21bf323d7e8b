"""A staff update that reaches a case no worker holds, right after an effect lane went idle.

Seen in the soak (seed 40002, five cases stuck for good with ``TMPRL1100``): the last workflow
task before an outage heard an email's result and issued no command; the customer's reply (an
update) came while no worker ran and the reminder's timer fired meanwhile. The worker that took
over got the email's result *together with* the update and the timer, since SDK core takes a task
without commands followed at once by another task's scheduling for a heartbeat; the SDK ran the
update first, a later replay ran the result first, and the commands that followed came in
another order. A lane that goes idle now writes the outbox's count to the memo, so no task that
heard a result ends without a command, and the grouping cannot change."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio.client import WorkflowHistory

from tests.reliability.harness import wait_until
from tests.reliability.test_replay import replayer
from tests.scenario import TIER1, Case
from worker import build_worker
from workflows.case import SupportCase
from workflows.contract import EFFECTS_PENDING_MEMO, DeadlinePolicy
from workflows.release import Release

RESULTS = {"EVENT_TYPE_ACTIVITY_TASK_COMPLETED", "EVENT_TYPE_ACTIVITY_TASK_FAILED"}


def kinds_of(history: WorkflowHistory) -> list[str]:
    return [e["eventType"] for e in json.loads(history.to_json())["events"]]


def idle_tasks_after_results(history: WorkflowHistory) -> list[int]:
    """The workflow tasks (by their completed event's id) that heard an effect's result and
    issued no command before the next task was scheduled: the shape core hands over again with
    whatever comes next."""
    kinds = kinds_of(history)
    found: list[int] = []
    heard_result = False
    for index, kind in enumerate(kinds, start=1):  # event ids count from 1
        heard_result = heard_result or kind in RESULTS
        if kind == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED":
            if heard_result and kinds[index : index + 1] == ["EVENT_TYPE_WORKFLOW_TASK_SCHEDULED"]:
                found.append(index)
            heard_result = False
    return found


async def test_a_reply_during_an_outage_after_an_email_replays(
    env, worker_settings, store, unique
) -> None:
    policy = DeadlinePolicy(pcr_reminder="15s", pcr_closing="1h")
    case = Case(env, worker_settings.task_queue, unique("idle-lane"))

    async def settled() -> bool:
        described = (await case.handle.describe()).raw_description
        return not described.pending_activities and not described.HasField("pending_workflow_task")

    async def fired() -> bool:
        return "EVENT_TYPE_TIMER_FIRED" in kinds_of(await case.handle.fetch_history())

    async def what() -> str:
        return str(await case.handle.describe())

    async with build_worker(env.client, worker_settings, store):
        await case.open(policy=policy)
        await case.to("Tier 1 Analysis", TIER1)
        await case.to("Pending Customer Response", TIER1)
        await wait_until(settled, 30, what)
    # No worker: the customer's reply (an update) waits; the reminder's timer fires meanwhile.
    reply = asyncio.create_task(case.reply("Here is the log."))
    await wait_until(fired, 60, what)
    async with build_worker(env.client, worker_settings, store):
        await reply
        await wait_until(settled, 30, what)

    history = await case.handle.fetch_history()
    kinds = kinds_of(history)
    # The outage's shape: the update's task timed out on the gone worker's queue, and the
    # reminder fired before the next worker accepted the update.
    assert "EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT" in kinds
    last_accepted = max(
        i for i, k in enumerate(kinds) if k == "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"
    )
    assert kinds.index("EVENT_TYPE_TIMER_FIRED") < last_accepted
    await replayer(SupportCase, Release).replay_workflow(history)
    assert idle_tasks_after_results(history) == []
    memo: Any = await (await case.handle.describe()).memo_value(EFFECTS_PENDING_MEMO)
    assert memo == 0
