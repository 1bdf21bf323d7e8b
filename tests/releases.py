"""Test-side helpers for releases: many cases in Pending Release at once, reading a release."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from starter.client import CaseClient
from tests.conftest import Inbox
from tests.scenario import CUSTOMER, TIER1, TIER2
from tests.seed import start_continued
from workflows import lifecycle
from workflows.case import CarriedState
from workflows.contract import (
    CASE_WORKFLOW,
    RELEASE_WORKFLOW,
    CaseInput,
    DeadlinePolicy,
    Register,
    RegisterCase,
    ReleaseInput,
    ReleaseStatus,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
    case_workflow_id,
    release_workflow_id,
)
from workflows.release import CarriedRelease, ReleaseState

TO_PENDING_RELEASE = (
    TransitionRequest(to=Status.TIER1_ANALYSIS, actor=TIER1),
    TierHandoff(to_tier=2, reason="defect_verification", actor=TIER1),
    TransitionRequest(to=Status.TIER2_ANALYSIS, actor=TIER2),
    TransitionRequest(to=Status.DEVELOPMENT, actor=TIER2),
)


def pending_release_state(
    case_number: str,
    release_id: str,
    policy: DeadlinePolicy | None = None,
    *,
    now: datetime | None = None,
    registers: bool = True,
) -> CarriedState:
    """A case walked to Pending Release by the pure core, as a continued run would carry it;
    ``registers``: with its registration with the release still to do (the case registers
    itself), else as if the release carried it already."""
    now = now or datetime.now(UTC)
    case = CaseInput(
        case_number=case_number,
        institution="Alma University",
        product="Alma",
        priority="normal",
        title="Loans report shows wrong totals",
        contact_email="ann@alma.example",
        opened_by=CUSTOMER if policy is None else TIER1,  # staff set a policy at open
        policy=policy,
    )
    state = lifecycle.open_case(case, now).state
    for event in TO_PENDING_RELEASE:
        state = lifecycle.decide(state, event, now).state
    decision = lifecycle.decide(
        state, TransitionRequest(to=Status.PENDING_RELEASE, actor=TIER2, release_id=release_id), now
    )
    register = [e for e in decision.effects if isinstance(e, Register)] if registers else []
    return CarriedState(carried=decision.state, effects=register)


async def seed_pending_release(
    client: Client,
    task_queue: str,
    case_numbers: Iterable[str],
    release_id: str,
    *,
    concurrency: int = 40,
) -> None:
    """Start many cases already in Pending Release (one workflow start each instead of six
    events), each registering with the release by its own activity, as a real one does."""
    seeds = [(case_workflow_id(n), pending_release_state(n, release_id)) for n in case_numbers]
    await start_continued(client, CASE_WORKFLOW, task_queue, seeds, concurrency=concurrency)


def release_handle(client: Client, release_id: str) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(release_workflow_id(release_id))


async def release_status(client: Client, release_id: str) -> ReleaseStatus:
    return await release_handle(client, release_id).query("status", result_type=ReleaseStatus)


async def wait_release(
    client: Client,
    release_id: str,
    check: Callable[[ReleaseStatus], bool],
    timeout: float = 30.0,
) -> ReleaseStatus:
    async def poll() -> ReleaseStatus:
        while True:
            try:
                status = await release_status(client, release_id)
                if check(status):
                    return status
            except Exception:  # not started yet, or between two runs
                pass
            await asyncio.sleep(0.1)

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"release {release_id} never got there; now: {await release_status(client, release_id)}"
        ) from None


async def wait_fan_out_checkpoint(
    client: Client, release_id: str, done: int, timeout: float = 30.0
) -> None:
    """Until the server holds a fan-out heartbeat saying the first ``done`` cases are told:
    what a retried fan-out resumes from."""

    async def checkpoint() -> int:
        raw = (await release_handle(client, release_id).describe()).raw_description
        told = 0
        for pending in raw.pending_activities:
            if pending.activity_type.name == "fan_out_release" and (
                payloads := pending.heartbeat_details.payloads
            ):
                told = max(told, int((await client.data_converter.decode(payloads))[0]))
        return told

    deadline = asyncio.get_running_loop().time() + timeout
    while (told := await checkpoint()) < done:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"release {release_id}: checkpoint at {told}, not {done}")
        await asyncio.sleep(0.1)


async def snapshots(
    client: Client, task_queue: str, case_numbers: Iterable[str], concurrency: int = 50
) -> dict[str, Snapshot]:
    cases = CaseClient(client, task_queue)
    gate = asyncio.Semaphore(concurrency)

    async def one(number: str) -> tuple[str, Snapshot]:
        async with gate:
            return number, await cases.snapshot(number)

    return dict(await asyncio.gather(*(one(n) for n in case_numbers)))


def shipped_mails(inbox: Inbox, release_id: str) -> Counter[str]:
    """How many distinct "release ... has shipped" messages each case's contact got.

    Distinct by Message-ID: a worker killed between sending and recording may resend the same
    message (same Message-ID, which mail clients collapse); a second effect would be a new one.
    """
    seen: dict[str, set[str]] = {}
    for message in inbox.matching(Subject=f"release {release_id} has shipped"):
        case = str(message["Subject"]).removeprefix("[Case ").split("]", 1)[0]
        seen.setdefault(case, set()).add(str(message["Message-ID"]))
    return Counter({case: len(ids) for case, ids in seen.items()})


# ---- stand-ins: many cheap "cases" for the fan-out to reach --------------------------------


@workflow.defn(name="ReleaseListener", sandboxed=False)
class ReleaseListener:
    """Stands in for a case in Pending Release (workflow id ``case-<n>``): it only counts the
    ``release_shipped`` signals it gets. A real case costs tens of milliseconds of worker CPU to
    start in the sandbox; a thousand of these start in a few seconds."""

    def __init__(self) -> None:
        self._deliveries = 0

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="release_shipped")
    def release_shipped(self, event: dict[str, Any]) -> None:
        self._deliveries += 1

    @workflow.query
    def deliveries(self) -> int:
        return self._deliveries


def listener_worker(client: Client, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ReleaseListener],
        max_cached_workflows=5_000,
    )


async def start_listeners(
    client: Client, task_queue: str, case_numbers: Iterable[str], *, concurrency: int = 64
) -> None:
    """Start a stand-in per case number."""
    gate = asyncio.Semaphore(concurrency)

    async def start(number: str) -> None:
        async with gate:
            await client.start_workflow(
                ReleaseListener.run, id=case_workflow_id(number), task_queue=task_queue
            )

    await asyncio.gather(*(start(n) for n in case_numbers))


async def register(
    client: Client,
    task_queue: str,
    release_id: str,
    case_numbers: Iterable[str],
    *,
    concurrency: int = 32,
) -> None:
    """Register cases with a release as a case's ``register_with_release`` activity does
    (signal-with-start of the release)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(number: str) -> None:
        async with gate:
            await client.start_workflow(
                RELEASE_WORKFLOW,
                ReleaseInput(release_id=release_id),
                id=release_workflow_id(release_id),
                task_queue=task_queue,
                start_signal="register_case",
                start_signal_args=[RegisterCase(case_number=number)],
            )

    await asyncio.gather(*(one(n) for n in case_numbers))


async def start_release_carrying(
    client: Client,
    task_queue: str,
    release_id: str,
    pending: list[str],
    **state: Any,
) -> WorkflowHandle[Any, Any]:
    """A release as a run continued from an earlier one starts: with these cases registered
    and not told yet (thousands of registrations without thousands of signals)."""
    carried = ReleaseState(release_id=release_id, pending=pending, registered=len(pending), **state)
    workflow_id = release_workflow_id(release_id)
    await start_continued(
        client, RELEASE_WORKFLOW, task_queue, [(workflow_id, CarriedRelease(carried=carried))]
    )
    return client.get_workflow_handle(workflow_id)


async def deliveries(
    client: Client, case_numbers: Iterable[str], concurrency: int = 50
) -> dict[str, int]:
    """How many ``release_shipped`` signals each stand-in got."""
    gate = asyncio.Semaphore(concurrency)

    async def one(number: str) -> tuple[str, int]:
        async with gate:
            handle = client.get_workflow_handle(case_workflow_id(number))
            return number, await handle.query(ReleaseListener.deliveries)

    return dict(await asyncio.gather(*(one(n) for n in case_numbers)))
