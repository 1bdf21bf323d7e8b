"""A staff update that reaches a case no worker holds, while its timer fires.

Seen in the soak (seed 40002, five cases stuck for good with ``TMPRL1100``, on the shell that ran
effects as activities): the last workflow task before an outage heard an effect's result; the
customer's reply (an update) came while no worker ran and the reminder's timer fired meanwhile;
the worker that took over got them together, ran them in another order than a later replay, and
the commands that followed differed. The case's records are local activities now, resolved in
the task that asks for them, so no result is left to be handed over with a later update; this
test keeps the outage's shape and checks that its history replays."""

from __future__ import annotations

import asyncio
import json

from temporalio.client import WorkflowHistory

from tests.reliability.harness import wait_until
from tests.reliability.test_replay import replayer
from tests.scenario import TIER1, Case
from worker import build_worker
from workflows.case import SupportCase
from workflows.contract import DeadlinePolicy
from workflows.release import Release


def kinds_of(history: WorkflowHistory) -> list[str]:
    return [e["eventType"] for e in json.loads(history.to_json())["events"]]


async def test_a_reply_during_an_outage_after_an_email_replays(
    env, worker_settings, store, unique
) -> None:
    policy = DeadlinePolicy(pcr_reminder="15s", pcr_closing="1h")
    case = Case(env, worker_settings.task_queue, unique("outage"))

    async def settled() -> bool:
        described = (await case.handle.describe()).raw_description
        return not described.HasField("pending_workflow_task")

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
        snapshot = await case.snapshot()

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
    assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in kinds  # records are local activities
    assert snapshot.status == "Waiting for Process"
