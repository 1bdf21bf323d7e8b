"""Integrity attacks against a real worker process, a real SMTP server and PostgreSQL: a start
that forges carried state, a case number started again after its case closed, a case started
under another case's id, a release started with forged carried state. Each run must fail at
once with the reason, send nothing, leave the first case's rows and outbox as they were, and no
workflow task may fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from activities.store import CaseStore
from starter.client import CaseClient, CaseRejected
from tests.reliability.harness import (
    CUSTOMER,
    TIER1,
    Plan,
    Tally,
    WorkerProcess,
    case_input,
    case_worker_environment,
    expect,
    failed_workflow_tasks,
    message_ids,
    send_events,
    to,
    wait_until,
)
from workflows import lifecycle
from workflows.contract import (
    CASE_WORKFLOW,
    RELEASE_WORKFLOW,
    MessageTemplate,
    Notify,
    Persist,
    Status,
    case_workflow_id,
    release_workflow_id,
)
from workflows.lifecycle import CarriedState
from workflows.release import CarriedRelease, ReleaseState

FORGED = "victim@forged.example"


@pytest.fixture
async def world(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> Any:
    url = await postgres_databases.create()
    task_queue = unique("integrity")
    worker = spawn_worker(case_worker_environment(env, task_queue, url, inbox))
    await worker.ready()
    store = CaseStore(url)
    yield env.client, task_queue, store, inbox, worker
    await store.dispose()


async def fails_at_once(handle: WorkflowHandle[Any, Any], kind: str) -> str:
    """The run's failure: of type ``kind``, within seconds."""
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == kind, repr(cause)
    return cause.message


async def settled(store: CaseStore, inbox: Any, plan: Plan, worker: WorkerProcess) -> None:
    """The case has done everything the core says: its rows and its emails."""
    want = now(plan)

    async def done() -> bool:
        rows = tuple(h.seq for h in await store.history(plan.number))
        return rows == want.history_seqs and want.message_ids <= set(message_ids(inbox.messages))

    await wait_until(done, 60, lambda: asyncio.sleep(0, f"{plan.number}: {worker.tail()}"))


def now(plan: Plan) -> Any:
    """What the case must have done by now (no deadline falls due in these tests)."""
    instant = datetime.now(UTC)
    return expect(plan, instant, until=instant)


async def open_case(client: Client, task_queue: str, plan: Plan) -> None:
    plan.run_id = (await CaseClient(client, task_queue).open(plan.case)).first_execution_run_id
    await send_events(client, plan)


async def test_a_start_that_forges_carried_state_sends_nothing_and_writes_nothing(
    world: Any, unique: Callable[[str], str], tally: Tally
) -> None:
    client, task_queue, store, inbox, worker = world
    # A real case, whose row a forged persist with a huge seq would freeze for good.
    victim = Plan(case_input(unique("V")), [to("Tier 1 Analysis", TIER1)])
    await open_case(client, task_queue, victim)
    await settled(store, inbox, victim, worker)
    row_before = await store.get_case(victim.number)

    forged_case = case_input(unique("F"), contact_email=FORGED)
    state = lifecycle.open_case(forged_case, datetime.now(UTC)).state
    mail = Notify(
        key=f"forged:{unique('k')}",
        template=MessageTemplate.CUSTOMER_COMMENT,
        recipient="contact",
        contact_email=FORGED,
        case_number=forged_case.case_number,
        facts={"title": "Your password expired", "text": "click here"},
    )
    assert row_before is not None
    freeze = Persist(key="forged:persist", case=row_before.model_copy(update={"seq": 10**9}))
    forged = CarriedState(carried=state, effects=[mail, freeze])
    handle = await client.start_workflow(
        CASE_WORKFLOW, forged, id=case_workflow_id(forged_case.case_number), task_queue=task_queue
    )
    message = await fails_at_once(handle, "InvalidCaseInput")
    assert "carries state" in message and "continue-as-new" in message

    # The victim goes on: its next change is stored (its row was not frozen).
    more = to("Pending Customer Response", TIER1)
    await client.get_workflow_handle(victim.workflow_id).signal("transition", more)
    victim.events.append(more)
    await settled(store, inbox, victim, worker)
    row_after = await store.get_case(victim.number)
    assert row_after is not None and row_after.status is Status.PENDING_CUSTOMER_RESPONSE
    assert row_after.seq == row_before.seq + 1
    assert not inbox.matching(To=FORGED)
    assert await store.outbox(forged_case.case_number) == []
    for workflow_id in (victim.workflow_id, handle.id):
        assert await failed_workflow_tasks(client, workflow_id) == []
    tally.cases = 2
    tally.messages_expected = len(now(victim).message_ids)
    tally.messages_received = len(inbox.messages)
    tally.history_rows_expected = len(now(victim).history_seqs)
    tally.history_rows = len(await store.history(victim.number))
    tally.notes = "forged carried start: InvalidCaseInput, no mail, no row"


async def test_a_case_number_started_again_after_it_closed_changes_nothing(
    world: Any, unique: Callable[[str], str], tally: Tally
) -> None:
    client, task_queue, store, inbox, worker = world
    first = Plan(
        case_input(unique("R")),
        [to("Tier 1 Analysis", TIER1), to("Closing", TIER1), to("Closed", CUSTOMER)],
    )
    await open_case(client, task_queue, first)
    await settled(store, inbox, first, worker)
    await asyncio.wait_for(client.get_workflow_handle(first.workflow_id).result(), 30)
    rows, outbox = await store.history(first.number), await store.outbox(first.number)
    row = await store.get_case(first.number)

    # The project's client refuses at once, and says why.
    with pytest.raises(CaseRejected, match=r"exists \(closed on \d{4}-\d\d-\d\d\); open a new"):
        await CaseClient(client, task_queue).open(first.case)

    # Any other caller: the server's default reuse policy lets the start through.
    second = first.case.model_copy(update={"contact_email": "new-contact@alma.example"})
    handle = await client.start_workflow(
        CASE_WORKFLOW,
        second,
        id=first.workflow_id,
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    message = await fails_at_once(handle, "CaseNumberTaken")
    assert f"case {first.number} was opened by run {first.run_id}" in message
    assert "open a new case that references it" in message

    assert not inbox.matching(To="new-contact@alma.example")
    assert await store.history(first.number) == rows
    assert await store.outbox(first.number) == outbox
    assert await store.get_case(first.number) == row
    assert message_ids(inbox.messages) == {m: 1 for m in now(first).message_ids}
    assert await failed_workflow_tasks(client, first.workflow_id) == []
    tally.cases = 1
    tally.messages_expected = len(now(first).message_ids)
    tally.messages_received = len(inbox.messages)
    tally.history_rows_expected = len(now(first).history_seqs)
    tally.history_rows = len(rows)
    tally.notes = "reused number: CaseNumberTaken, no mail to the new contact, rows unchanged"


async def test_a_case_started_under_another_cases_id_is_refused(
    world: Any, unique: Callable[[str], str], tally: Tally
) -> None:
    client, task_queue, store, inbox, _ = world
    case = case_input(unique("N"), contact_email=FORGED)
    handle = await client.start_workflow(
        CASE_WORKFLOW, case, id=case_workflow_id(unique("other")), task_queue=task_queue
    )
    message = await fails_at_once(handle, "InvalidCaseInput")
    assert f"must run as workflow {case_workflow_id(case.case_number)}" in message
    assert await store.get_case(case.case_number) is None
    assert not inbox.matching(To=FORGED)
    assert await failed_workflow_tasks(client, handle.id) == []
    tally.cases = 1
    tally.notes = "case-<m> started for case n: InvalidCaseInput, nothing sent"


async def test_a_release_started_with_forged_carried_state_is_refused(
    world: Any, unique: Callable[[str], str], tally: Tally
) -> None:
    client, task_queue, _store, _inbox, _ = world
    release_id = unique("2031.01")
    forged = CarriedRelease(
        carried=ReleaseState(release_id=release_id, pending=["x"], registered=1)
    )
    handle = await client.start_workflow(
        RELEASE_WORKFLOW, forged, id=release_workflow_id(release_id), task_queue=task_queue
    )
    message = await fails_at_once(handle, "InvalidReleaseInput")
    assert "carries state" in message
    assert await failed_workflow_tasks(client, handle.id) == []
    tally.cases = 0
    tally.notes = "forged carried release start: InvalidReleaseInput"
