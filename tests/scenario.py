"""Test-side helpers that read like the guide: open a case, act as a role, let time pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from runtime.pollers import wait_for_poller
from starter.client import CaseClient
from workflows.contract import (
    Actor,
    CaseInput,
    CustomerReply,
    DeadlinePolicy,
    PolicyOverrides,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
    case_workflow_id,
)

CUSTOMER = Actor(role="customer", name="Ann Reader", institution="Alma University")
TIER1 = Actor(role="tier1", name="Tom One")
TIER2 = Actor(role="tier2", name="Tess Two")
DEV = Actor(role="development", name="Dev Eloper")
PM = Actor(role="product_manager", name="Pam Manager")
KB = Actor(role="kb_team", name="Kay Bee")


# A worker polls within a second on a quiet machine; far longer when other suites share the CPUs.
POLLER_WITHIN = 60.0


async def worker_polling(client: Client, task_queue: str, identity: str | None = None) -> None:
    """Return once Temporal lists the worker (``identity``, or any) as polling ``task_queue``:
    what a test then asks of the worker (a command's poller check included) finds it there."""
    if not await wait_for_poller(client, task_queue, POLLER_WITHIN, identity=identity):
        who = f"worker {identity} does not poll" if identity else "no worker polls"
        raise AssertionError(f"{who} task queue {task_queue} after {POLLER_WITHIN:.0f} s")


def case_input(number: str, **fields: Any) -> CaseInput:
    """The scenarios' case: Ann of Alma University, a normal-priority report, opened by her."""
    data: dict[str, Any] = {
        "case_number": number,
        "institution": "Alma University",
        "product": "Alma",
        "priority": "normal",
        "title": "Loans report shows wrong totals",
        "contact_email": "ann@alma.example",
        "opened_by": CUSTOMER,
    }
    return CaseInput.model_validate(data | fields)


class Case:
    """One case under test, driven through the project's own typed client."""

    def __init__(self, env: WorkflowEnvironment, task_queue: str, number: str) -> None:
        self.env = env
        self.client = CaseClient(env.client, task_queue)
        self.number = number

    @property
    def handle(self) -> WorkflowHandle:
        return self.client.handle(self.number)

    async def open(
        self, policy: DeadlinePolicy | PolicyOverrides | None = None, **fields: Any
    ) -> Case:
        # A customer opens with the defaults; staff may set a policy at open.
        fields.setdefault("opened_by", CUSTOMER if policy is None else TIER1)
        await self.client.open(case_input(self.number, policy=policy, **fields))
        return self

    async def to(self, status: Status | str, actor: Actor, **kw: Any) -> Snapshot:
        return await self.client.transition(
            self.number, TransitionRequest(to=Status(status), actor=actor, **kw)
        )

    async def reply(self, text: str = "Here is the log you asked for.", **kw: Any) -> Snapshot:
        kw.setdefault("actor", CUSTOMER)
        return await self.client.reply(self.number, CustomerReply(text=text, **kw))

    async def handoff(self, to_tier: int, reason: str, actor: Actor, note: str = "") -> Snapshot:
        return await self.client.handoff(
            self.number,
            TierHandoff(to_tier=to_tier, reason=reason, note=note, actor=actor),
        )

    async def walk(self, *steps: tuple[Status | str, Actor]) -> Snapshot:
        snap = None
        for status, actor in steps:
            snap = await self.to(status, actor)
        assert snap is not None
        return snap

    async def snapshot(self) -> Snapshot:
        return await self.client.snapshot(self.number)

    async def wait(self, check: Callable[[Snapshot], bool], timeout: float = 20.0) -> Snapshot:
        async def poll() -> Snapshot:
            while not check(snap := await self.snapshot()):
                await asyncio.sleep(0.1)
            return snap

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"case never got there; now: {await self.snapshot()!r}") from None

    async def wait_status(self, status: Status | str, timeout: float = 20.0) -> Snapshot:
        return await self.wait(lambda s: s.status == Status(status), timeout)

    async def pass_time(self, duration: timedelta) -> None:
        """Fast-forward this case's own clock (time skipping v2): its timers fire on the way."""
        # A handle pinned to an old run answers False after continue-as-new; follow the chain.
        handle = self.env.client.get_workflow_handle(case_workflow_id(self.number))
        await self.env.fast_forward(handle, duration)

    async def pass_until(self, instant: datetime) -> None:
        """Fast-forward this case's clock to ``instant`` (from wherever its virtual clock is)."""
        handle = self.env.client.get_workflow_handle(case_workflow_id(self.number))
        now = await self.env.get_current_time(handle)
        assert instant > now, f"{instant} is already past (the case's clock reads {now})"
        await self.env.fast_forward(handle, instant - now)

    async def settle(self, seconds: float = 1.0) -> Snapshot:
        """Give a fired timer and its activities a moment, then read the case."""
        await asyncio.sleep(seconds)
        return await self.snapshot()


async def update_events(handle: WorkflowHandle) -> int:
    """How many update events (accepted, completed, rejected) the history holds."""
    return len(
        [
            e
            async for e in handle.fetch_history_events()
            if "UPDATE" in EventType.Name(e.event_type)
            and "OPTIONS" not in EventType.Name(e.event_type)
        ]
    )
