"""What a case carries into its next run stays under 512 KiB at its worst: every carried list
and field at its maximum, every character a control character that JSON writes as six bytes,
the pending effects at their budget (the case store away for long). Proven on the pure state,
then by a case that continues as new in exactly that state on a real worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities import CaseStore, upgrade
from tests.reliability.tcp_proxy import TcpProxy
from tests.seed import start_continued
from worker import build_worker
from workflows import bounds
from workflows import case as case_module
from workflows.contract import (
    CASE_WORKFLOW,
    Actor,
    CaseInput,
    Effect,
    HistoryEntry,
    MessageTemplate,
    Notify,
    RejectedEvent,
    Status,
    case_workflow_id,
)
from workflows.lifecycle import (
    HISTORY_TAIL,
    RECENT_TAIL,
    REJECTED_TAIL,
    SEEN_EVENT_IDS,
    CarriedState,
    CaseState,
)

C = "\x01"  # JSON writes it as \u0001: six bytes for one character
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def worst_case(number: str) -> CaseInput:
    name = C * 200
    return CaseInput(
        case_number=number,
        institution=name,
        product=name,
        priority="normal",
        title=C * 500,
        # One mailbox, no control characters: the longest that escapes most is a quoted local
        # part of backslash pairs (two bytes of JSON each).
        contact_email='"' + "\\" * 240 + '"@b.example',
        references="R" * 64,
        opened_by=Actor(role="customer", name=name, institution=name),
    )


def worst_state(number: str) -> CaseState:
    """Every tail at its entry bound, every entry at its longest (the longest note is a tier
    handoff's "reason: note", 500 + 2 + 2,000 characters)."""
    case = worst_case(number)
    actor = Actor(role="tier2", name=C * 200, institution=C * 200)
    entry = HistoryEntry(
        seq=10**9,
        from_status=Status.TIER2_ANALYSIS,
        to_status=Status.TIER2_CLOSED,
        at=NOW,
        actor=actor,
        note=C * 2_502,
    )
    rejected = RejectedEvent(
        at=NOW,
        event=C * 100,
        reason="wrong_institution",
        message=C * 1_000,
        event_id=C * 128,
        excerpt=C * 200,
    )
    return CaseState(
        case=case,
        policy=case.policy or CaseState.model_fields["policy"].annotation(),  # type: ignore[misc]
        status=Status.PENDING_CUSTOMER_RESPONSE,
        status_since=NOW,
        opened_at=NOW,
        seq=10**9,
        came_from=Status.TIER2_ANALYSIS,
        release_id="R" * 64,
        release_shipped_at=NOW,
        history=[entry] * HISTORY_TAIL,
        rejected=[rejected] * REJECTED_TAIL,
        recent=[C * 400] * RECENT_TAIL,
        seen_event_ids=[C * 128] * SEEN_EVENT_IDS,
        opened_by_run="01a22e66-beeb-747c-bbfd-c681b3ee3c43",
    )


def worst_effects(state: CaseState) -> list[Effect]:
    """Customer comments of the longest text waiting for the mail server, as many as the
    budget lets a run carry (a run holds its continue-as-new while they exceed it)."""
    effects: list[Effect] = []
    while True:
        comment = Notify(
            key=f"case-{state.case.case_number}:{state.opened_by_run}:{10**9 + len(effects)}"
            ":notify:customer_comment",
            template=MessageTemplate.CUSTOMER_COMMENT,
            recipient="support",
            contact_email=state.case.contact_email,
            case_number=state.case.case_number,
            facts={
                "title": state.case.title,
                "status": str(state.status),
                "institution": state.case.institution,
                "product": state.case.product,
                "release_id": state.release_id,
                "owner_tier": 2,
                "text": C * 10_000,
            },
        )
        if not bounds.effects_fit([*effects, comment]):
            return effects
        effects.append(comment)


def payload_bytes(value: Any) -> int:
    """The size of ``value`` as the worker writes it (the continue-as-new input)."""
    return pydantic_data_converter.payload_converter.to_payloads([value])[0].ByteSize()


def test_the_worst_carried_state_fits_in_512_kib() -> None:
    state = worst_state("W" * 64)
    effects = worst_effects(state)
    untrimmed = payload_bytes(CarriedState(carried=state, effects=effects))
    carried = CarriedState(carried=bounds.fit_state(state), effects=effects)
    size = payload_bytes(carried)
    print(f"worst carried state: {size / 1024:.0f} KiB (untrimmed {untrimmed / 1024:.0f} KiB)")
    assert untrimmed > 3 * bounds.MAX_CARRIED_BYTES, "bounds in entries alone: near 2 MiB"
    assert size <= bounds.MAX_CARRIED_BYTES
    assert len(effects) >= 3 and bounds.effects_bytes(effects) <= bounds.EFFECT_BYTES
    # The newest entries are the ones kept; none of the pending effects is dropped.
    assert carried.carried.history and carried.carried.rejected and carried.carried.recent
    assert carried.carried.seen_event_ids and carried.effects == effects


def test_a_run_holds_its_continue_as_new_while_its_effects_exceed_their_budget() -> None:
    state = worst_state("W")
    effects = worst_effects(state)
    assert bounds.effects_fit(effects)
    assert not bounds.effects_fit([*effects, effects[0]])


async def continued_inputs(client: Client, workflow_id: str) -> list[bytes]:
    """Each run's start input, oldest run first."""
    sizes = []
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            attrs = event.workflow_execution_started_event_attributes
            sizes.append(attrs.input.payloads[-1].data)
            break
    return sizes[::-1]


@contextlib.asynccontextmanager
async def database_behind_a_proxy(databases: Any) -> AsyncIterator[tuple[str, str, TcpProxy]]:
    """A fresh PostgreSQL database, its schema built, and a proxy that can cut it off: (the
    direct URL, the URL through the proxy, the proxy)."""
    direct = await databases.create()
    await upgrade(direct)
    target = make_url(direct)
    proxy = await TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = target.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    try:
        yield direct, proxied, proxy
    finally:
        await proxy.stop()


async def task_failures(client: Client, workflow_id: str) -> list[Any]:
    """Failed workflow tasks of every run, but the one the test's own terminate closes."""
    failures = []
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        run = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for event in run.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = event.workflow_task_failed_event_attributes.cause
                if cause != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND:
                    failures.append(event)
    return failures


# Unsandboxed, so the test's short history bound and drain wait reach the workflow code.
@pytest.mark.parametrize("worker_settings", [False], indirect=True)
async def test_a_case_continues_as_new_in_its_worst_state(
    env: Any, worker_settings: Any, unique: Any, postgres_databases: Any, monkeypatch: Any
) -> None:
    """The worst state, its pending comments unrecorded (the case store is cut off): past the
    history bound the case continues as new carrying all of it, within the bound, and no task
    fails."""
    monkeypatch.setattr(case_module, "CASE_HISTORY_BOUND", 10)
    monkeypatch.setattr(case_module, "DRAIN_WAIT", timedelta(seconds=1))
    number = unique("WORST")
    state = worst_state(number)
    effects = worst_effects(state)
    seed = CarriedState(carried=bounds.fit_state(state), effects=effects)
    workflow_id = case_workflow_id(number)
    async with database_behind_a_proxy(postgres_databases) as (_, proxied, proxy):
        proxy.cut()
        settings = worker_settings.model_copy(update={"database_url": proxied})
        store = CaseStore(proxied)
        try:
            async with build_worker(env.client, settings, store):
                await start_continued(
                    env.client, CASE_WORKFLOW, settings.task_queue, [(workflow_id, seed)]
                )

                handle = env.client.get_workflow_handle(workflow_id)
                for _ in range(12):  # refused events grow the history past the bound
                    await handle.signal("transition", {"to": "Nowhere"})

                async def continued() -> list[bytes]:
                    while len(inputs := await continued_inputs(env.client, workflow_id)) < 3:
                        await asyncio.sleep(0.2)
                    return inputs

                # seed, the seeded run, and at least one run it continued into
                inputs = await asyncio.wait_for(continued(), 60)
                carried = await handle.query("snapshot")
                await handle.terminate("test over")
        finally:
            await store.dispose()
    sizes = [len(data) for data in inputs]
    assert max(sizes[1:]) <= bounds.MAX_CARRIED_BYTES, sizes
    again = CarriedState.model_validate_json(inputs[2])
    assert again.effects == effects, "every pending comment is carried, none dropped"
    assert carried["case_number"] == number
    assert await task_failures(env.client, workflow_id) == []
    print(f"continued-as-new inputs: {[s // 1024 for s in sizes]} KiB")


def comments_over_budget(state: CaseState) -> list[Effect]:
    """Plain customer comments (10,000 characters each), a few more than the budget holds."""
    effects: list[Effect] = []
    while bounds.effects_bytes(effects) <= bounds.EFFECT_BYTES + 20_000:
        effects.append(
            Notify(
                key=f"case-{state.case.case_number}:hold:{len(effects)}:notify:customer_comment",
                template=MessageTemplate.CUSTOMER_COMMENT,
                recipient="support",
                contact_email=state.case.contact_email,
                case_number=state.case.case_number,
                facts={"title": "Loans report", "status": str(state.status), "text": "x" * 10_000},
            )
        )
    return effects


async def has_timer(client: Client, workflow_id: str) -> bool:
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            return True
    return False


@pytest.mark.parametrize("worker_settings", [False], indirect=True)
async def test_effects_over_their_budget_hold_the_continue_as_new_until_they_drain(
    env: Any,
    worker_settings: Any,
    unique: Any,
    postgres_databases: Any,
    inbox: Any,
    monkeypatch: Any,
) -> None:
    """The case store is cut off with more comments pending than a run may carry: past its
    history bound the case does not continue as new (nothing is dropped); once the store is
    back and the comments are recorded, it does, carrying only what is left, and each comment
    is mailed once."""
    monkeypatch.setattr(case_module, "CASE_HISTORY_BOUND", 10)
    monkeypatch.setattr(case_module, "DRAIN_WAIT", timedelta(seconds=1))
    number = unique("HOLD")
    state = CaseState(
        case=CaseInput(
            case_number=number,
            institution="Alma University",
            product="Alma",
            priority="normal",
            title="Loans report",
            contact_email="ann@alma.example",
            opened_by=Actor(role="customer", name="Ann", institution="Alma University"),
        ),
        policy=CaseState.model_fields["policy"].annotation(),  # type: ignore[misc]
        status=Status.TIER1_ANALYSIS,
        status_since=NOW,
        opened_at=NOW,
        seq=5,
    )
    effects = comments_over_budget(state)
    assert not bounds.effects_fit(effects)
    workflow_id = case_workflow_id(number)
    async with database_behind_a_proxy(postgres_databases) as (direct, proxied, proxy):
        proxy.cut()
        settings = worker_settings.model_copy(update={"database_url": proxied})
        store = CaseStore(proxied)
        try:
            async with build_worker(env.client, settings, store):
                seed = CarriedState(carried=state, effects=effects)
                await start_continued(
                    env.client, CASE_WORKFLOW, settings.task_queue, [(workflow_id, seed)]
                )
                handle = env.client.get_workflow_handle(workflow_id)
                for _ in range(12):  # refused events grow the history past the bound
                    await handle.signal("transition", {"to": "Nowhere"})

                async def record_backs_off() -> None:
                    # Its first timer: the record failed past its local retries (the case has
                    # no deadline in Tier 1 Analysis, and no drain began).
                    while not await has_timer(env.client, workflow_id):
                        await asyncio.sleep(0.2)

                await asyncio.wait_for(record_backs_off(), 60)
                held = await continued_inputs(env.client, workflow_id)
                await proxy.restore()  # the case store is back

                async def continued() -> list[bytes]:
                    while len(inputs := await continued_inputs(env.client, workflow_id)) < 3:
                        await asyncio.sleep(0.2)
                    return inputs

                inputs = await asyncio.wait_for(continued(), 120)
                await inbox.wait_for(len(effects), timeout=120, Subject="comment")
                await handle.terminate("test over")
        finally:
            await store.dispose()
    # Past the bound, the case store away: still the seeded run.
    assert len(held) == 2, "continued as new while its effects exceeded their budget"
    carried = CarriedState.model_validate_json(inputs[2])
    assert bounds.effects_fit(carried.effects) and len(carried.effects) < len(effects)
    keys = [str(m.message["Message-ID"]) for m in inbox.messages]
    assert len(keys) == len(set(keys)) == len(effects), "each comment mailed once"
    outbox = CaseStore(direct)
    try:
        assert len(await outbox.outbox(number)) == len(effects)
    finally:
        await outbox.dispose()
