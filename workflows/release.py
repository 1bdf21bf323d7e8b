"""``Release``: the registry and clock of one release (``ReleaseTrain``, which a Schedule starts,
is in ``workflows/train.py``).

``Release`` (id ``release-<release_id>``). Cases register on entering Pending Release (their
``record`` does signal-with-start, so the first case creates the workflow). It sleeps until
``ships_at`` (moved by ``reschedule``, a signal or an update) or a ``ship_now``, then tells every
registered case through the ``fan_out_release`` activity, a thousand cases per activity: its own
history grows by a handful of events per thousand cases, never one signal command per case, and it
continues as new before the history gets long (the registrations arrive as signals, which are events
too). It stays open after shipping, so a case that registers late, even while the fan-out runs,
joins the queue and is told at once.

Exactly once in effect: the fan-out may deliver a signal twice (an activity retried from its
last heartbeat); the case ignores a second ``release_shipped`` of its release.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError

from workflows import trust
from workflows.contract import (
    RELEASE_WORKFLOW,
    ActivityName,
    Actor,
    BacklogChunk,
    FanOut,
    FanOutResult,
    HandlerName,
    Instant,
    RegisterCase,
    RejectedEvent,
    ReleaseInput,
    ReleaseStatus,
    Reschedule,
    Role,
    ShipNow,
    release_workflow_id,
)
from workflows.effects import RELEASE_PRIORITY
from workflows.integrity import carried_release_problem
from workflows.payloads import Malformed, decode_object, explain

# Cases told per fan-out activity: its input (the case numbers) stays a few tens of kilobytes.
CASES_PER_FAN_OUT = 1_000
# Continue as new past this many events (each registration is one), well before Temporal's
# own limits; the carried state holds only the cases not told yet. Read at each check, so an
# unsandboxed test worker can lower it.
RELEASE_HISTORY_BOUND = 5_000
# A fan-out attempt that stops heartbeating for this long is retried (from its checkpoint).
FAN_OUT_HEARTBEAT = timedelta(seconds=10)
FAN_OUT_TIMEOUT = timedelta(minutes=30)
FAN_OUT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,  # the server is the only thing it needs; retried until it answers
)
# Rejected (unproven) release signals kept in the state, for ``status``.
REJECTED_TAIL = 20
# Registrations a run keeps (and carries) at most, in bytes of JSON; beyond them the oldest go
# to the case store in chunks of this size (``release_backlog``), read back when it is their
# turn to be told: 100,000 registrations keep the carried state as small as a few hundred.
PENDING_BYTES = 128 * 1024
BACKLOG_TIMEOUT = timedelta(seconds=60)


class ReleaseState(BaseModel):
    """What a run carries to the next: counters and the cases not told yet, not the history."""

    release_id: str
    ships_at: Instant | None = None
    shipped_at: Instant | None = None
    pending: list[str] = Field(default_factory=list)  # registered, not told yet, in order
    registered: int = 0
    notified: int = 0
    skipped: int = 0  # told, but closed or gone (nothing to tell)
    rejected: list[RejectedEvent] = Field(default_factory=list)  # the last few, unproven
    backlog_chunks: int = 0  # chunks of registrations kept in the case store
    backlog_loaded: int = 0  # of them, read back into ``pending``
    backlog_cases: int = 0  # registrations in the chunks not read back yet


class CarriedRelease(BaseModel):
    carried: ReleaseState


@workflow.defn(name=RELEASE_WORKFLOW)
class Release:
    @workflow.init
    def __init__(self, start: RawValue) -> None:
        self._start_error: str | None = None
        self._state = ReleaseState(release_id="?")
        self._senders = trust.installed(workflow.info().task_queue)
        try:
            # A continued run carries every case not told yet (tens of bytes each): only a new
            # release's input is held to the size limit of an event's payload.
            data = decode_object([start], "release input", limit=None)
            if "carried" in data:
                self._state = CarriedRelease.model_validate(data).carried
                info = workflow.info()
                self._start_error = carried_release_problem(
                    info.workflow_id, info.continued_run_id, self._state.release_id
                )
            else:
                decode_object([start], "release input")  # a new release: the event size limit
                release = ReleaseInput.model_validate(data)
                self._state = ReleaseState(release_id=release.release_id, ships_at=release.ships_at)
                expected = release_workflow_id(release.release_id)
                if workflow.info().workflow_id != expected:
                    self._start_error = (
                        f"release {release.release_id} must run as workflow {expected}, "
                        f"not {workflow.info().workflow_id}"
                    )
        except (Malformed, ValidationError) as err:
            self._start_error = explain(err)
        # Not yet told; a case registering again before it is told is not queued twice.
        self._waiting = set(self._state.pending)

    @workflow.run
    async def run(self, start: RawValue) -> ReleaseStatus:
        if self._start_error is not None:
            raise ApplicationError(
                f"invalid release input: {self._start_error}",
                type="InvalidReleaseInput",
                non_retryable=True,
            )
        self._publish()
        while not self._ship_if_due():
            if self._should_continue_as_new():
                await self._continue_as_new()
            if self._over_budget():
                await self._spill()
                continue
            await self._wait_for_ship_time()
        while True:
            await workflow.wait_condition(
                lambda: (
                    bool(self._state.pending)
                    or self._should_continue_as_new()
                    or self._backlog_left()
                )
            )
            if self._should_continue_as_new():
                await self._continue_as_new()  # keeps what is over the budget in the store
            if not self._state.pending:
                await self._load()
            else:
                await self._fan_out_next_batch()

    # ---- the clock ----------------------------------------------------------------------------

    async def _wait_for_ship_time(self) -> None:
        state = self._state
        ships_at = state.ships_at
        # A timeout is the instant coming: shipped on the next pass, against the clock.
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: (
                    state.shipped_at is not None
                    or state.ships_at != ships_at
                    or self._should_continue_as_new()
                    or self._over_budget()
                ),
                timeout=None if ships_at is None else ships_at - workflow.now(),
                timeout_summary=f"release {state.release_id} ships",
            )

    def _ship_if_due(self) -> bool:
        """Ship if the instant has come; True once shipped."""
        state = self._state
        if (
            state.shipped_at is None
            and state.ships_at is not None
            and state.ships_at <= workflow.now()
        ):
            # The scheduled instant, even when acted on late (a worker was down): the
            # cases' 14 days count from when the release shipped, not from when we woke.
            self._ship(state.ships_at, "scheduled")
        return state.shipped_at is not None

    def _ship(self, at: datetime, how: str) -> None:
        self._state.shipped_at = at
        workflow.logger.info(
            "release shipped",
            extra={"release_id": self._state.release_id, "shipped_at": at.isoformat(), "how": how},
        )
        self._publish()

    # ---- the fan-out --------------------------------------------------------------------------

    async def _fan_out_next_batch(self) -> None:
        state = self._state
        assert state.shipped_at is not None
        batch = state.pending[:CASES_PER_FAN_OUT]
        result = await workflow.execute_activity(
            ActivityName.FAN_OUT_RELEASE,
            FanOut(release_id=state.release_id, shipped_at=state.shipped_at, case_numbers=batch),
            result_type=FanOutResult,
            start_to_close_timeout=FAN_OUT_TIMEOUT,
            heartbeat_timeout=FAN_OUT_HEARTBEAT,
            retry_policy=FAN_OUT_RETRY,
            priority=RELEASE_PRIORITY,
            summary=f"tell {len(batch)} cases that {state.release_id} shipped",
        )
        # Registrations that arrived meanwhile were appended behind the batch.
        state.pending = state.pending[len(batch) :]
        self._waiting.difference_update(batch)
        state.notified += len(batch)
        state.skipped += result.skipped
        self._publish()

    # ---- the backlog: registrations kept in the case store -----------------------------------

    def _over_budget(self) -> bool:
        return _json_bytes(self._state.pending) > PENDING_BYTES

    def _backlog_left(self) -> bool:
        return self._state.backlog_loaded < self._state.backlog_chunks

    async def _spill(self) -> None:
        """The oldest registrations, up to PENDING_BYTES, into the store as the next chunk."""
        state = self._state
        chunk = _within(state.pending, PENDING_BYTES)
        await workflow.execute_activity(
            ActivityName.RELEASE_BACKLOG_ADD,
            BacklogChunk(
                release_id=state.release_id, chunk=state.backlog_chunks, case_numbers=chunk
            ),
            start_to_close_timeout=BACKLOG_TIMEOUT,
            retry_policy=FAN_OUT_RETRY,
            summary=f"keep {len(chunk)} registrations in the case store",
        )
        # Registrations that came meanwhile are behind the chunk.
        state.pending = state.pending[len(chunk) :]
        self._waiting.difference_update(chunk)
        state.backlog_chunks += 1
        state.backlog_cases += len(chunk)

    async def _load(self) -> None:
        state = self._state
        chunk = await workflow.execute_activity(
            ActivityName.RELEASE_BACKLOG_LOAD,
            BacklogChunk(release_id=state.release_id, chunk=state.backlog_loaded),
            result_type=BacklogChunk,
            start_to_close_timeout=BACKLOG_TIMEOUT,
            retry_policy=FAN_OUT_RETRY,
            summary=f"read registrations chunk {state.backlog_loaded} back from the case store",
        )
        state.pending.extend(chunk.case_numbers)
        self._waiting.update(chunk.case_numbers)
        state.backlog_loaded += 1
        state.backlog_cases -= len(chunk.case_numbers)

    # ---- continue-as-new ----------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > RELEASE_HISTORY_BOUND
        )

    async def _continue_as_new(self) -> None:
        while self._over_budget():  # what a run carries stays within PENDING_BYTES
            await self._spill()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(CarriedRelease(carried=self._state).model_dump(mode="json"))

    # ---- handlers -----------------------------------------------------------------------------

    @workflow.signal(name=HandlerName.SHIP_NOW)
    def ship_now(self, request: ShipNow | None = None) -> None:
        request = request or ShipNow()
        if refused := self._refused("ship_now", request.actor, request.proof, request.event_id):
            self._reject("ship_now", refused)
            return
        # Shipped here, not by the run loop, so that a continue-as-new cannot come in between.
        if self._state.shipped_at is None:
            self._ship(workflow.now(), "ship_now")

    @workflow.signal(name=HandlerName.REGISTER_CASE)
    def register_case(self, request: RegisterCase) -> None:
        if refused := self._refused("register_case", request.actor, request.proof, None):
            self._reject("register_case", refused)
            return
        case_number = request.case_number
        if case_number in self._waiting:
            return  # registered already and not told yet: told once
        # After shipping, a case that was told already is queued again: it left the release and
        # came back (the case ignores a second release_shipped of the release it knows shipped).
        self._waiting.add(case_number)
        self._state.pending.append(case_number)
        self._state.registered += 1
        self._publish()

    @workflow.signal(name=HandlerName.RESCHEDULE)
    def reschedule_signal(self, request: Reschedule) -> None:
        if refused := self._refused("reschedule", request.actor, request.proof, None):
            self._reject("reschedule", refused)
            return
        if self._state.shipped_at is not None:
            workflow.logger.warning(
                "reschedule ignored: the release has shipped",
                extra={"release_id": self._state.release_id},
            )
            return
        self._reschedule(request.ships_at)

    @workflow.update(name=HandlerName.RESCHEDULE)
    def reschedule_update(self, request: Reschedule) -> ReleaseStatus:
        """Move the ship instant; an instant that has passed ships the release at once."""
        self._reschedule(request.ships_at)
        self._ship_if_due()
        return self.status()

    @reschedule_update.validator
    def _validate_reschedule(self, request: Reschedule) -> None:
        state = self._state
        if refused := self._refused("reschedule", request.actor, request.proof, None):
            raise ApplicationError(
                f"release {state.release_id}: reschedule rejected: {refused.message}",
                refused.reason,
                type="ReleaseRescheduleRejected",
                non_retryable=True,
            )
        if state.shipped_at is not None:
            raise ApplicationError(
                f"release {state.release_id} shipped at {state.shipped_at.isoformat()}; "
                "a shipped release cannot be rescheduled",
                "shipped",
                type="ReleaseRescheduleRejected",
                non_retryable=True,
            )

    def _reschedule(self, ships_at: datetime) -> None:
        self._state.ships_at = ships_at
        workflow.logger.info(
            "release rescheduled",
            extra={"release_id": self._state.release_id, "ships_at": ships_at.isoformat()},
        )
        self._publish()

    # ---- trusted senders ------------------------------------------------------------------------

    def _refused(
        self, name: str, actor: Actor | None, proof: str | None, event_id: str | None
    ) -> trust.Refusal | None:
        """With trusted senders, who ships or moves a release is staff, proven (README "Trust
        model"); checked at ``workflow.now()`` only, so replay gives the same answer."""
        senders, now = self._senders, workflow.now()
        if senders is None or not senders.required_at(now):
            return None
        if actor is None:
            return trust.Refusal(
                trust.UNAUTHENTICATED, f"no proof: {name} needs an actor and its proof"
            )
        if actor.role in (Role.CUSTOMER, Role.SYSTEM):
            return trust.Refusal(
                trust.NOT_PERMITTED, f"a release is moved by staff, not {actor.role}"
            )
        return trust.verify(
            senders,
            proof,
            audience=release_workflow_id(self._state.release_id),
            actor=actor,
            event_id=event_id,
            now=now,
        )

    def _reject(self, name: str, refused: trust.Refusal) -> None:
        entry = RejectedEvent(
            at=workflow.now(), event=name, reason=refused.reason, message=refused.message
        )
        self._state.rejected = [*self._state.rejected, entry][-REJECTED_TAIL:]
        workflow.logger.warning(
            "release signal rejected",
            extra={"event": name, "reason": refused.reason, "detail": refused.message},
        )

    @workflow.query(name=HandlerName.STATUS)
    def status(self) -> ReleaseStatus:
        state = self._state
        return ReleaseStatus(
            release_id=state.release_id,
            ships_at=state.ships_at,
            shipped_at=state.shipped_at,
            cases_registered=state.registered,
            cases_notified=state.notified,
            cases_to_notify=len(state.pending) + state.backlog_cases,
            rejected=state.rejected,
        )

    def _publish(self) -> None:
        """The release as the Temporal UI's "current details" shows it."""
        state = self._state
        if state.shipped_at is not None:
            head = f"**Shipped** {state.shipped_at:%Y-%m-%d %H:%M:%S} UTC"
        elif state.ships_at is not None:
            head = f"**Ships** {state.ships_at:%Y-%m-%d %H:%M:%S} UTC"
        else:
            head = "**Not scheduled** (ships on `ship_now` or `reschedule`)"
        workflow.set_current_details(
            f"{head}\n\n- cases registered: {state.registered}\n- cases told: {state.notified}"
            f" ({state.skipped} closed or gone)"
            f"\n- cases to tell: {len(state.pending) + state.backlog_cases}"
        )


def _json_bytes(case_numbers: list[str]) -> int:
    return sum(len(n) + 3 for n in case_numbers)  # "n", (case numbers need no escaping)


def _within(case_numbers: list[str], budget: int) -> list[str]:
    """The first case numbers whose JSON fits in ``budget`` bytes (at least one)."""
    used, end = 0, 0
    while end < len(case_numbers) and (end == 0 or used + len(case_numbers[end]) + 3 <= budget):
        used += len(case_numbers[end]) + 3
        end += 1
    return case_numbers[:end]
