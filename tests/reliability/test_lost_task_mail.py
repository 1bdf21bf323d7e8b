"""A worker dies after a case's record and before the end of the workflow task that decided it.

The guide's reminder falls due in Pending Customer Response; the task that decides it records the
reminder in the outbox, and its worker is killed before the task completes. The task's retry on
another worker decides anew. If the customer's reply came in meanwhile, the retry takes it first
(the SDK applies signals before a timer of the same task): the case leaves Pending Customer
Response and the reminder was never sent by the case, so no customer may get it (the 5-minute
soak of seed 50001 once delivered such a reminder). If nothing came, the retry decides the same
reminder, and it goes exactly once. What must arrive is what the case's history says, read by the
soak's oracle."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from activities.store import CaseStore
from tests.reliability.harness import (
    TIER1,
    Plan,
    Tally,
    WorkerProcess,
    case_input,
    case_worker_environment,
    message_ids,
    reply,
    to,
    wait_until,
)
from tests.reliability.stalling_worker import STALLED
from tests.soak.oracle import replay, run_histories
from workflows.contract import (
    CASE_WORKFLOW,
    DeadlinePolicy,
    HandlerName,
    PolicySettings,
    Snapshot,
    Status,
)

# The reminder falls due a few seconds after the case enters Pending Customer Response.
POLICY = DeadlinePolicy(pcr_reminder="3s", pcr_closing="1h")
# The worker's shortest span (``case_worker_environment``), as the oracle must read policies.
SETTINGS = PolicySettings.model_validate({"shortest": "1s"})
# Temporal's default. The lost task's retry comes this long after the kill. Long against the
# kill itself, on a busy machine too: a task whose local activity outlasts 80 % of it is
# completed by SDK core (a heartbeat), and the reminder is then kept, not lost.
TASK_TIMEOUT = timedelta(seconds=10)


async def lose_the_reminders_task(
    env: Any,
    inbox: Any,
    url: str,
    task_queue: str,
    plan: Plan,
    spawn_worker: Callable[..., WorkerProcess],
    reply_meanwhile: bool,
) -> WorkerProcess:
    """Open the case on the stalling worker, take it to Pending Customer Response, kill the worker
    once the reminder is recorded (sending the reply first if asked), start a sound worker."""
    stalling = spawn_worker(
        case_worker_environment(env, task_queue, url, inbox, STALL_TEMPLATE="reminder"),
        name="stalling",
        command=("-m", "tests.reliability.stalling_worker"),
    )
    await stalling.ready()
    handle = await env.client.start_workflow(
        CASE_WORKFLOW,
        plan.case,
        id=plan.workflow_id,
        task_queue=task_queue,
        task_timeout=TASK_TIMEOUT,
    )
    plan.run_id = handle.first_execution_run_id or handle.result_run_id
    for event in (
        to("Tier 1 Analysis", TIER1),
        to("Pending Customer Response", TIER1),
    ):
        await handle.execute_update(HandlerName.TRANSITION, event, result_type=Snapshot)
    await stalling.wait_for_line(STALLED, timeout=60)
    if reply_meanwhile:
        await handle.signal(HandlerName.CUSTOMER_REPLY, reply("The log you asked for."))
    stalling.kill()
    return await spawn_worker(
        case_worker_environment(env, task_queue, url, inbox), name="sound"
    ).ready()


async def mail_as_the_history_says(
    env: Any, inbox: Any, url: str, plan: Plan, worker: WorkerProcess, settled: Status
) -> tuple[list[str], Counter[str]]:
    """Once the case has settled in ``settled`` and its outbox is empty of unsent mail: what its
    history says it sends, and what arrived."""
    store = CaseStore(url)
    handle = env.client.get_workflow_handle(plan.workflow_id)
    try:

        async def quiet() -> bool:
            snap = await handle.query(HandlerName.SNAPSHOT, result_type=Snapshot)
            unsent = await store.outbox(plan.number, pending_only=True)
            return snap.status is settled and not unsent

        async def why() -> str:
            return f"{await store.outbox(plan.number, pending_only=True)}\n{worker.tail()}"

        await wait_until(quiet, 90, why)
    finally:
        await store.dispose()
    assert plan.run_id is not None
    replayed = replay(
        plan.number, await run_histories(env.client, plan.number, plan.run_id), SETTINGS
    )
    assert not replayed.problems and not replayed.failed_tasks
    return replayed.message_ids, message_ids(inbox.messages)


@dataclass
class Outcome:
    expected: list[str]  # the Message-ID of every email the case's history sends
    received: Counter[str]  # what arrived, by Message-ID
    worker: WorkerProcess  # the sound worker that took over


@pytest.fixture
def lost_reminder(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> Callable[..., Awaitable[Outcome]]:
    """``await lost_reminder(reply_meanwhile=..., settled=...)``: one case through the loss of
    its reminder's task, until it has settled in ``settled``; its row of the closing table."""

    async def run(*, reply_meanwhile: bool, settled: Status) -> Outcome:
        url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
        plan = Plan(case_input(unique("LOST"), policy=POLICY))
        sound = await lose_the_reminders_task(
            env, inbox, url, unique("lost-task"), plan, spawn_worker, reply_meanwhile
        )
        expected, received = await mail_as_the_history_says(env, inbox, url, plan, sound, settled)
        tally.cases, tally.messages_expected = 1, len(expected)
        tally.messages_received = sum(received.values())
        tally.notes = "worker killed between record and task end; " + (
            "the reply in the retry" if reply_meanwhile else "the retry decides the same"
        )
        return Outcome(expected, received, sound)

    return run


async def test_a_reminder_decided_by_a_lost_task_is_never_sent_when_the_retry_takes_a_reply(
    lost_reminder: Callable[..., Awaitable[Outcome]],
) -> None:
    # The reply takes the case to Waiting for Process, where no deadline runs.
    out = await lost_reminder(reply_meanwhile=True, settled=Status.WAITING_FOR_PROCESS)
    assert not [m for m in out.expected if "reminder" in m], "the retry took the reply first"
    reminders = [m for m in out.received if "reminder" in m]
    assert reminders == [], f"a reminder the case never kept was mailed: {reminders}"
    assert set(out.received) == set(out.expected)
    assert all(n == 1 for n in out.received.values())
    assert "notify.dropped_lost_task" in out.worker.output()


async def test_a_reminder_decided_again_by_the_retry_of_a_lost_task_goes_once(
    lost_reminder: Callable[..., Awaitable[Outcome]],
) -> None:
    out = await lost_reminder(reply_meanwhile=False, settled=Status.PENDING_CUSTOMER_RESPONSE)
    [reminder] = [m for m in out.expected if "reminder" in m]
    assert out.received[reminder] == 1
    assert set(out.received) == set(out.expected)
    assert all(n == 1 for n in out.received.values())
