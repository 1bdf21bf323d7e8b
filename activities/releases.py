"""Release activities: a release train opens a release; a shipped release tells its cases; and
how a case registers with its release (``Registrar``, called by the case's ``record``).

The fan-out keeps a sliding window of signals in flight (no barrier per chunk) and heartbeats
the index below which every case has been told; a retried attempt (the worker crashed, or it
stopped heartbeating) resumes there. The signals in flight above that index at the crash are
sent again: the case ignores a second ``release_shipped`` of its release, so the effect is once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar, cast

import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows.contract import (
    RELEASE_WORKFLOW,
    ActivityName,
    Actor,
    FanOut,
    FanOutResult,
    HandlerName,
    Register,
    RegisterCase,
    ReleaseInput,
    ReleaseShipped,
    Reschedule,
    Role,
    case_workflow_id,
    release_workflow_id,
)
from workflows.effects import RELEASE_PRIORITY

log = structlog.get_logger()

Event = TypeVar("Event", bound=BaseModel)

# Signals in flight at once during a fan-out: enough to keep a server busy. Tests and the bench
# change it (``ReleaseActivities(client, concurrency=...)``).
CONCURRENCY = 64
# Heartbeat (the checkpoint a retried attempt resumes from) this often; the SDK passes them on
# to the server at its own pace (``max_heartbeat_throttle_interval``), well inside the timeout.
FAN_OUT_HEARTBEAT_INTERVAL = 0.5  # seconds


# Who the worker's own release signals name, signed with its key under trusted senders.
TRAIN_ACTOR = Actor(role=Role.DEVELOPMENT, name="release train")
RELEASE_ACTOR = Actor(role=Role.DEVELOPMENT, name="release")

# Signs an event for a workflow id: ``runtime.signing.Signer.sign``.
Sign = Callable[[str, Any], Any]


def signed(sign: Sign | None, workflow_id: str, event: Event, actor: Actor) -> Event:
    """The event as the worker sends it: with its actor and proof under trusted senders."""
    if sign is None:
        return event
    return cast(Event, sign(workflow_id, event.model_copy(update={"actor": actor})))


class Registrar:
    """A case registers with its release on entering Pending Release: signal-with-start, so the
    first case of a release creates its (not yet scheduled) workflow. A second registration of
    a case not yet told is a no-op for the release."""

    def __init__(self, client: Client, sign: Sign | None = None) -> None:
        self._client = client
        self._sign = sign

    async def register(self, effect: Register) -> None:
        wid = release_workflow_id(effect.release_id)
        register = signed(
            self._sign, wid, RegisterCase(case_number=effect.case_number), RELEASE_ACTOR
        )
        await self._client.start_workflow(
            RELEASE_WORKFLOW,
            ReleaseInput(release_id=effect.release_id),
            id=wid,
            task_queue=activity.info().task_queue,
            start_signal=HandlerName.REGISTER_CASE,
            start_signal_args=[register],
            static_summary=f"Release {effect.release_id}",
            priority=RELEASE_PRIORITY,
        )


class ReleaseActivities:
    """``sign``: with trusted senders, how the worker signs the release signals its activities
    send (its own key, ``CASES_SIGNING_KEY``, of a sender registered for ``development``)."""

    def __init__(
        self, client: Client, *, concurrency: int | None = None, sign: Sign | None = None
    ) -> None:
        self._client = client
        self._concurrency = concurrency
        self._sign = sign

    def activities(self) -> list[Callable[..., Any]]:
        return [self.open_release, self.fan_out_release]

    @activity.defn(name=ActivityName.OPEN_RELEASE)
    async def open_release(self, release: ReleaseInput) -> None:
        """Create the release scheduled for ``ships_at``, or schedule the one cases created."""
        assert release.ships_at is not None
        wid = release_workflow_id(release.release_id)
        move = self._signed(wid, Reschedule(ships_at=release.ships_at), TRAIN_ACTOR)
        await self._client.start_workflow(
            RELEASE_WORKFLOW,
            release,
            id=wid,
            task_queue=activity.info().task_queue,
            start_signal=HandlerName.RESCHEDULE,
            start_signal_args=[move],
            static_summary=f"Release {release.release_id}",
            priority=RELEASE_PRIORITY,
        )

    def _signed(self, workflow_id: str, event: Event, actor: Actor) -> Event:
        return signed(self._sign, workflow_id, event, actor)

    @activity.defn(name=ActivityName.FAN_OUT_RELEASE)
    async def fan_out_release(self, batch: FanOut) -> FanOutResult:
        details = activity.info().heartbeat_details
        start, skipped_before = (int(details[0]), int(details[1])) if details else (0, 0)
        cases = batch.case_numbers
        event = ReleaseShipped(release_id=batch.release_id, shipped_at=batch.shipped_at)
        progress = _Progress(len(cases), start, skipped_before)
        window = asyncio.Semaphore(self._concurrency or CONCURRENCY)

        async def tell(index: int) -> None:
            try:
                told = await self._tell(cases[index], event)
            finally:
                window.release()
            progress.mark(index, told)

        async def heartbeats() -> None:
            # On a clock, not on progress: a stalled signal must not look like a dead worker.
            while True:
                progress.beat()
                await asyncio.sleep(FAN_OUT_HEARTBEAT_INTERVAL)

        ticker = asyncio.create_task(heartbeats())
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(start, len(cases)):
                    await window.acquire()
                    group.create_task(tell(index))
        except* RPCError as failed:
            # The first server error, as it is; the retry resumes from the last heartbeat.
            raise failed.exceptions[0] from None
        finally:
            ticker.cancel()
        progress.beat()
        log.info(
            "release fan-out batch done",
            release_id=batch.release_id,
            cases=len(cases),
            resumed_at=start,
            skipped=progress.skipped,
            attempt=activity.info().attempt,
        )
        return FanOutResult(signalled=len(cases) - progress.skipped, skipped=progress.skipped)

    async def _tell(self, case_number: str, event: ReleaseShipped) -> bool:
        """Signal one case; False if it is closed or gone (it moved on: nothing to tell)."""
        wid = case_workflow_id(case_number)
        handle = self._client.get_workflow_handle(wid)
        try:
            await handle.signal(
                HandlerName.RELEASE_SHIPPED, self._signed(wid, event, RELEASE_ACTOR)
            )
            return True
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise


class _Progress:
    """Which cases of the batch are done; heartbeats the contiguous prefix that is."""

    def __init__(self, size: int, start: int, skipped: int) -> None:
        self.outcome: list[bool | None] = [None] * size
        self.done = start  # every case below this index has been told (or skipped)
        self.skipped = skipped  # skipped below ``done``

    def mark(self, index: int, told: bool) -> None:
        self.outcome[index] = told
        while self.done < len(self.outcome) and (outcome := self.outcome[self.done]) is not None:
            self.skipped += not outcome
            self.done += 1

    def beat(self) -> None:
        activity.heartbeat(self.done, self.skipped)
