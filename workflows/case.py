"""``SupportCase``: the durable shell around the pure lifecycle core.

Handlers validate a payload and hand the event to ``lifecycle.decide``; the run loop sleeps
until the next deadline (an absolute instant derived from state) or until an event changes the
state; separate lanes run the queued effects as activities, one lane per kind of effect, each in
order and in batches, so a slow SMTP server never delays a deadline nor a database record.
Signals arrive through one dynamic handler so that every payload, however malformed, is seen
raw and recorded rather than dropped by the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import bounds, integrity, lifecycle, metrics, search, trust
from workflows.contract import (
    CASE_WORKFLOW,
    EFFECTS_PENDING_MEMO,
    ActivityName,
    ApplyPolicy,
    CaseInput,
    ClaimCase,
    CustomerReply,
    Deadline,
    Effect,
    HandlerName,
    Notify,
    Persist,
    PolicySettings,
    RejectedEvent,
    ReleaseShipped,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
    UndeliveredMessage,
)
from workflows.effects import (
    CLAIM_RETRY,
    CLAIM_TIMEOUT,
    EFFECT_BATCH_BYTES,
    EFFECT_LANES,
    EFFECTS_IN_ORDER,
    HEARTBEAT_TIMEOUT,
    POLICY_SETTINGS_TIMEOUT,
    EffectOptions,
)
from workflows.lifecycle import CarriedState, CaseState, Due, Rejection
from workflows.payloads import Malformed, check_size, decode_object, excerpt, explain

# Continue-as-new past this many events, well before Temporal's own limits; a quiet case never
# gets near it.
CASE_HISTORY_BOUND = 1_500
# How long a pending continue-as-new waits for the activities in flight before carrying them over.
DRAIN_WAIT = timedelta(minutes=10)
# Runs that record this marker run their effects in lanes (per kind, batched); runs started
# before it replay their one-at-a-time effects unchanged (README, "Changing the workflow").
# The old branch goes in two deploys, each once no open run predates the one before: first
# ``workflow.deprecate_patch`` with the lanes only, then neither call nor ``_run_in_order``.
# What shows the time has come: ``WorkflowType = "SupportCase" AND ExecutionStatus = "Running"
# AND StartTime < "<deploy date>"`` lists nothing (a continued run starts afresh, with the patch).
EFFECT_LANES_PATCH = "effect-lanes"
# Runs that record this marker wake a lane by an event its effects set, not by a condition: the
# main loop is then the only condition waiter, so an activation that issued no command (a refused
# signal) changes no later command's order, however the server groups the jobs on replay. Runs
# before it keep lanes that wait on conditions, and the order they recorded.
LANE_WAKES_PATCH = "lane-wakes"
# Runs that record this marker end no workflow task that heard an effect's result without a
# command (a lane going idle writes the outbox's count to the memo): SDK core hands a task without
# commands over again together with a following update's and runs the update first, where a
# replay runs the result first, so later commands would come in another order.
EFFECT_MARKS_PATCH = "effect-marks"
# Runs that record this marker run the rules' latest edition (``lifecycle.EDITION``) and read the
# worker's policy settings when a case opens; older runs keep edition 1 until their next run.
EDITION_PATCH = "guide-edition-2"

Event = CustomerReply | TierHandoff | TransitionRequest | ReleaseShipped | ApplyPolicy

# Rejections logged one by one per workflow task; past that, one line says where the rest are
# (the metric, the snapshot): a flood logged line by line overruns the SDK's deadlock limit.
LOGGED_REJECTIONS = 20

EVENTS: dict[str, type[Event]] = {
    HandlerName.CUSTOMER_REPLY: CustomerReply,
    HandlerName.TIER_HANDOFF: TierHandoff,
    HandlerName.TRANSITION: TransitionRequest,
    HandlerName.RELEASE_SHIPPED: ReleaseShipped,
    HandlerName.APPLY_POLICY: ApplyPolicy,
}


@workflow.defn(name=CASE_WORKFLOW)
class SupportCase:
    @workflow.init
    def __init__(self, start: RawValue) -> None:
        self._effects: deque[Effect] = deque()
        self._running: set[str] = set()  # the lanes with an activity in flight
        self._draining = False
        self._search: dict[str, object] = {}
        self._start_error: str | None = None
        self._opened_now = False  # this run opened the case (not a continued run)
        self._parked: Deadline | None = None  # a deadline the core failed on; waits for an event
        self._integrity = False  # the run claims its number and bounds its carried state
        self._lanes = False  # the run's effects run in lanes (per kind, batched)
        # With LANE_WAKES_PATCH: one event per lane, set when effects of its kind are queued.
        self._wakes: dict[str, asyncio.Event] | None = None
        self._marks = False  # with EFFECT_MARKS_PATCH: a lane going idle updates the memo
        # Search attributes and details are published once per activation, not once per event,
        # so a flood of signals in one activation stays one cheap workflow task.
        self._changed = True
        self._logged_at: datetime | None = None  # the instant (task) of the last logged rejection
        self._logged = 0
        self._state: CaseState
        # Trusted senders, if this worker is configured with them (README "Trust model").
        self._senders = trust.installed(workflow.info().task_queue)
        try:
            # Decoded without the event size limit: the state a continued run carries is
            # routinely bigger than any event (a new case's input is checked against it below).
            data = decode_object([start], "start input", limit=None)
            info = workflow.info()
            if "carried" in data:
                carried = CarriedState.model_validate(data)
                self._start_error = integrity.carried_case_problem(
                    info.workflow_id, info.continued_run_id, carried.carried.case.case_number
                )
                self._state = carried.carried
                self._effects.extend(carried.effects)
                if self._state.edition < lifecycle.EDITION and workflow.patched(EDITION_PATCH):
                    self._state = self._state.model_copy(update={"edition": lifecycle.EDITION})
            else:
                check_size([start], "start input")  # a new case: the event size limit
                case = CaseInput.model_validate(data)
                self._start_error = integrity.new_case_problem(info.workflow_id, case.case_number)
                opener = info.first_execution_run_id or info.run_id
                edition = lifecycle.EDITION if workflow.patched(EDITION_PATCH) else 1
                decision = lifecycle.open_case(
                    case,
                    workflow.now(),
                    edition,
                    senders=self._senders,
                    opened_by_run=opener,
                )
                self._opened_now = True
                self._state = decision.state
                self._effects.extend(decision.effects)
        except (Malformed, ValidationError, Rejection) as err:
            self._start_error = explain(err)
        except Exception as err:  # a bug of the core: the start fails with it, never the task
            self._start_error = f"the case could not open: {err!r}"[:1_000]
        if self._start_error is not None:
            self._effects.clear()  # a refused start runs no effect
        else:
            # Every patch is decided in the run's first activation, before the first await (the
            # lanes' at the start of ``run``, where older runs asked it): replay learns a task's
            # patches only when it reaches that task, so a patch asked later may replay False.
            self._integrity = workflow.patched(integrity.INTEGRITY_PATCH)

    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        if self._start_error is not None:
            raise ApplicationError(
                f"invalid case input: {self._start_error}",
                type="InvalidCaseInput",
                non_retryable=True,
            )
        self._lanes = workflow.patched(EFFECT_LANES_PATCH)
        if self._lanes and workflow.patched(LANE_WAKES_PATCH):
            self._wakes = {kind: asyncio.Event() for kind in EFFECT_LANES}
            self._wake_lanes()  # the effects a continued run carried over
            self._marks = workflow.patched(EFFECT_MARKS_PATCH)
        if self._opened_now:
            # Counted before the first await: the activation after a local activity's result
            # can count as replaying, and a replay records no metric.
            metrics.transition(None, self._state.status)
        # The policy first: a start it refuses must not claim the number (nor run any effect).
        if self._opened_now and self._state.edition >= 2:
            await self._resolve_policy()
        if self._opened_now and self._integrity:
            await self._claim_case_number()
        pump = asyncio.create_task(self._run_lanes() if self._lanes else self._run_in_order())
        while True:
            while self._state.status is not Status.CLOSED and not self._should_continue_as_new():
                await self._sleep_until_next_deadline()
            self._publish()
            if self._state.status is Status.CLOSED:
                await workflow.wait_condition(lambda: not self._effects and not self._running)
                pump.cancel()
                return lifecycle.snapshot(self._state)
            await self._continue_as_new(pump)  # returns only while the effects do not fit

    async def _claim_case_number(self) -> None:
        """The first effect of an opening run: the number is this run's, or the run fails
        before any other effect (a reused number must not mail or overwrite the first case)."""
        run_id = self._state.opened_by_run
        assert run_id is not None
        owner = await workflow.execute_activity(
            ActivityName.CLAIM_CASE,
            ClaimCase(case=lifecycle.case_record(self._state), run_id=run_id),
            result_type=str,
            start_to_close_timeout=CLAIM_TIMEOUT,
            # It heartbeats: a worker that stops mid-claim is noticed in seconds, not at the
            # timeout, since every other effect of the case waits for the claim.
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=CLAIM_RETRY,
            summary=f"claim case number {self._state.case.case_number}",
        )
        if owner != run_id:
            self._effects.clear()
            raise ApplicationError(
                integrity.number_taken(self._state.case.case_number, owner),
                type="CaseNumberTaken",
                non_retryable=True,
            )

    async def _resolve_policy(self) -> None:
        """The worker's default policy and bounds, read once and kept in history: a changed
        setting never changes an open case, and a replay reads what the case read."""
        settings = await workflow.execute_local_activity(
            ActivityName.POLICY_SETTINGS,
            start_to_close_timeout=POLICY_SETTINGS_TIMEOUT,
            result_type=PolicySettings,
            summary="read the organisation's deadline policy",
        )
        try:
            # At the opening instant: the task that hears the result may be a later one.
            opened = self._state.opened_at
            self._commit(lifecycle.resolve_policy(self._state, settings, opened))
        except Exception as err:
            message = err.message if isinstance(err, Rejection) else repr(err)
            raise ApplicationError(
                f"invalid case input: {message}",
                type="InvalidCaseInput",
                non_retryable=True,
            ) from None

    # ---- the clock ----------------------------------------------------------------------------

    async def _sleep_until_next_deadline(self) -> None:
        self._publish()
        due = lifecycle.next_deadline(self._state)
        if due is not None and due == self._parked:
            due = None  # the core failed on it: wait for an event to change the state
        if due is not None:
            left = due.at - workflow.now()
            if left <= timedelta(0):
                self._apply_deadline(due)
                return
        seq = self._state.seq
        # A timeout is the deadline's turn; it is re-checked against the clock on the next pass.
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._state.seq != seq or self._changed or self._should_continue_as_new(),
                timeout=None if due is None else left,
                timeout_summary=None
                if due is None
                else f"{due.action}: {lifecycle.describe(due)} at {due.at:%Y-%m-%d %H:%M:%S} UTC",
            )

    def _apply_deadline(self, due: Deadline) -> None:
        lateness = (workflow.now() - due.at).total_seconds()
        try:
            self._commit(self._decide(Due(due)))
        except Rejection as rejection:
            self._parked = due
            self._reject(f"deadline {due.action}", rejection.reason, rejection.message)
            return
        metrics.lateness(due.action, lateness)
        workflow.logger.info(
            "deadline acted",
            extra={"action": str(due.action), "due": due.at.isoformat(), "lateness_s": lateness},
        )

    # ---- continue-as-new ----------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        due = (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > CASE_HISTORY_BOUND
        )
        # Pending effects over their byte budget hold the continue-as-new until they drain: the
        # run keeps taking events and deadlines, and nothing is dropped.
        return due and (not self._integrity or bounds.effects_fit(self._effects))

    async def _continue_as_new(self, pump: asyncio.Task[None]) -> None:
        # Let the activities in flight finish, so the next run does not start the same effects
        # twice at once; stuck ones (SMTP down for long) are carried over and retried.
        self._draining = True
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not self._running, timeout=DRAIN_WAIT)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._integrity and not bounds.effects_fit(self._effects):
            self._draining = False  # events during the drain added more than fits: go on
            self._wake_lanes()
            return
        pump.cancel()
        state = bounds.fit_state(self._state) if self._integrity else self._state
        workflow.continue_as_new(CarriedState(carried=state, effects=list(self._effects)))

    # ---- effects ------------------------------------------------------------------------------

    async def _run_lanes(self) -> None:
        await asyncio.gather(*(self._lane(kind, options) for kind, options in EFFECT_LANES.items()))

    async def _lane(self, kind: str, options: EffectOptions) -> None:
        def pending() -> list[Effect]:
            return [e for e in self._effects if e.kind == kind]

        while True:
            if self._wakes is None:
                await workflow.wait_condition(lambda: not self._draining and bool(pending()))
            else:
                wake = self._wakes[kind]
                await wake.wait()
                wake.clear()
                if self._draining or not pending():
                    continue
            while batch := take(pending(), options.batch, EFFECT_BATCH_BYTES):
                await self._run_batch(kind, options, batch)
                goes_on = self._wakes is not None and not self._draining
                if self._marks and not (goes_on and pending()):
                    workflow.upsert_memo({EFFECTS_PENDING_MEMO: len(self._effects)})
                if not goes_on:
                    break

    async def _run_batch(self, kind: str, options: EffectOptions, batch: list[Effect]) -> None:
        self._running.add(kind)
        try:
            await self._execute(options, batch)
        except ActivityError as err:
            # Retries are unlimited, so this is a non-retryable failure: a bug, not an outage.
            keys = [e.key for e in batch]
            workflow.logger.error("effects failed", extra={"keys": keys, "error": str(err)})
        finally:
            self._running.discard(kind)
        done = {id(e) for e in batch}
        self._effects = deque(e for e in self._effects if id(e) not in done)

    def _wake_lanes(self) -> None:
        """Wake the lanes with effects queued, in the lanes' fixed order."""
        if self._wakes is None:
            return
        queued = {e.kind for e in self._effects}
        for kind, wake in self._wakes.items():
            if kind in queued:
                wake.set()

    async def _run_in_order(self) -> None:
        """The effects of a run started before the lanes: one at a time, in order."""
        while True:
            await workflow.wait_condition(lambda: bool(self._effects) and not self._draining)
            effect = self._effects[0]
            self._running.add("any")
            try:
                await self._execute(EFFECTS_IN_ORDER[effect.kind], [effect])
            except ActivityError as err:
                workflow.logger.error("effect failed", extra={"key": effect.key, "error": str(err)})
            finally:
                self._running.discard("any")
            self._effects.popleft()

    async def _execute(self, options: EffectOptions, batch: list[Effect]) -> None:
        result = await workflow.execute_activity(
            options.activity,
            batch if options.batch > 1 else batch[0],
            start_to_close_timeout=options.start_to_close,
            heartbeat_timeout=options.heartbeat,
            retry_policy=options.retry,
            summary=summarize(batch),
        )
        self._note_undelivered(result)

    def _note_undelivered(self, result: object) -> None:
        """Keep the messages the mail server refused for good (notify answers them as objects)
        in the state; shown in the snapshot and the UI's details. No command: a history whose
        activities answered only words replays unchanged."""
        refused = undelivered_in(result)
        if not refused:
            return
        self._state = lifecycle.record_undelivered(self._state, refused)
        workflow.set_current_details(lifecycle.details_markdown(self._state))

    # ---- events -------------------------------------------------------------------------------

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        if self._start_error is not None:
            return  # the run fails at once with the reason; there is no case to act on
        model = EVENTS.get(name)
        try:
            if model is None:
                raise Malformed(f"unknown signal {name!r}; known: {', '.join(EVENTS)}")
            event = model.model_validate(decode_object(args, name))
        except (Malformed, ValidationError) as err:
            self._reject(name, "malformed", explain(err), excerpt=excerpt(args))
            return
        try:
            self._accept(name, event)
        except Rejection as rejection:
            self._reject(name, rejection.reason, rejection.message, event=event)

    @workflow.update(name=HandlerName.CUSTOMER_REPLY)
    def customer_reply_update(self, arg: RawValue) -> Snapshot:
        return self._update(HandlerName.CUSTOMER_REPLY, arg)

    @customer_reply_update.validator
    def _validate_customer_reply(self, arg: RawValue) -> None:
        self._validate(HandlerName.CUSTOMER_REPLY, arg)

    @workflow.update(name=HandlerName.TIER_HANDOFF)
    def tier_handoff_update(self, arg: RawValue) -> Snapshot:
        return self._update(HandlerName.TIER_HANDOFF, arg)

    @tier_handoff_update.validator
    def _validate_tier_handoff(self, arg: RawValue) -> None:
        self._validate(HandlerName.TIER_HANDOFF, arg)

    @workflow.update(name=HandlerName.TRANSITION)
    def transition_update(self, arg: RawValue) -> Snapshot:
        return self._update(HandlerName.TRANSITION, arg)

    @transition_update.validator
    def _validate_transition(self, arg: RawValue) -> None:
        self._validate(HandlerName.TRANSITION, arg)

    @workflow.update(name=HandlerName.APPLY_POLICY)
    def apply_policy_update(self, arg: RawValue) -> Snapshot:
        return self._update(HandlerName.APPLY_POLICY, arg)

    @apply_policy_update.validator
    def _validate_apply_policy(self, arg: RawValue) -> None:
        self._validate(HandlerName.APPLY_POLICY, arg)

    @workflow.query(name=HandlerName.SNAPSHOT)
    def snapshot(self) -> Snapshot:
        return lifecycle.snapshot(self._state)

    @workflow.query(name=HandlerName.POLICY_PREVIEW)
    def policy_preview(self, arg: RawValue) -> Snapshot:
        """The case as ``apply_policy`` with this payload would leave it now (a dry run)."""
        event = self._parse(HandlerName.APPLY_POLICY, arg)
        try:
            return lifecycle.snapshot(self._decide(event).state)
        except Rejection as rejection:
            raise ApplicationError(rejection.message, rejection.reason) from None

    def _validate(self, name: str, arg: RawValue) -> None:
        """Run the same ``decide`` the handler will; a rejection never reaches history."""
        if self._start_error is not None:
            raise ApplicationError(f"invalid case input: {self._start_error}", non_retryable=True)
        event = self._parse(name, arg)
        if lifecycle.is_duplicate(self._state, getattr(event, "event_id", None)):
            return
        try:
            self._decide(event)
        except Rejection as rejection:
            raise ApplicationError(
                lifecycle.describe_rejection(self._state, _asked(name, event), rejection),
                rejection.reason,
                type="CaseEventRejected",
                non_retryable=True,
            ) from None

    def _update(self, name: str, arg: RawValue) -> Snapshot:
        self._accept(name, self._parse(name, arg))
        return lifecycle.snapshot(self._state)

    def _parse(self, name: str, arg: RawValue) -> Event:
        try:
            return EVENTS[name].model_validate(decode_object([arg], name))
        except (Malformed, ValidationError) as err:
            raise ApplicationError(
                f"malformed {name}: {explain(err)}",
                "malformed",
                type="CaseEventRejected",
                non_retryable=True,
            ) from None

    def _accept(self, name: str, event: Event) -> None:
        if lifecycle.is_duplicate(self._state, getattr(event, "event_id", None)):
            workflow.logger.info("duplicate event ignored", extra={"event_name": name})
            return
        self._commit(self._decide(event))

    def _decide(self, event: Event | Due) -> lifecycle.Decision:
        """The core's answer; anything but a ``Rejection`` it raises is a bug, and becomes a
        rejection too (reason ``internal``): no input may fail a workflow task."""
        try:
            return lifecycle.decide(self._state, event, workflow.now(), self._senders)
        except Rejection:
            raise
        except Exception as err:
            workflow.logger.exception("the lifecycle core failed", extra={"error": repr(err)})
            raise Rejection("internal", f"the case could not apply it: {err!r}"[:500]) from None

    def _commit(self, decision: lifecycle.Decision) -> None:
        before = self._state.status
        self._state = decision.state
        if self._state.status is not before:
            metrics.transition(before, self._state.status)
        self._effects.extend(decision.effects)
        self._changed = True
        self._parked = None
        if decision.effects:
            self._wake_lanes()

    def _reject(
        self,
        name: str,
        reason: str,
        message: str,
        event: BaseModel | None = None,
        excerpt: str | None = None,
    ) -> None:
        entry = RejectedEvent(
            at=workflow.now(),
            event=name[:100],
            reason=reason,
            message=message[:1_000],
            event_id=getattr(event, "event_id", None),
            excerpt=excerpt,
        )
        self._state = lifecycle.record_rejection(self._state, entry)
        metrics.rejected(reason, name)
        self._changed = True
        self._log_rejection(name, reason, entry.message)

    def _log_rejection(self, name: str, reason: str, detail: str) -> None:
        # One workflow task, one instant: workflow.now() tells the tasks apart.
        if workflow.now() != self._logged_at:
            self._logged_at, self._logged = workflow.now(), 0
        self._logged += 1
        if self._logged <= LOGGED_REJECTIONS:
            workflow.logger.warning(
                "event rejected", extra={"event_name": name, "reason": reason, "detail": detail}
            )
        elif self._logged == LOGGED_REJECTIONS + 1:
            workflow.logger.warning(
                "more events rejected in this workflow task: counted in "
                "case_rejected_events_total, the last ones kept in the snapshot",
                extra={"logged": LOGGED_REJECTIONS},
            )

    # ---- what ops see -------------------------------------------------------------------------

    def _publish(self) -> None:
        """Keep search attributes and the UI's current details in step with the state (once per
        activation: only if it changed since the last time)."""
        if not self._changed:
            return
        self._changed = False
        due = lifecycle.next_deadline(self._state)
        values = search.case_values(lifecycle.case_record(self._state), due.at if due else None)
        changed = search.updates(values, self._search)
        if changed:
            workflow.upsert_search_attributes(changed)
            self._search = values
        workflow.set_current_details(lifecycle.details_markdown(self._state))


def _asked(name: str, event: BaseModel) -> str:
    if isinstance(event, TransitionRequest):
        return f"transition to {event.to!s} by {event.actor.role}"
    if isinstance(event, TierHandoff):
        return f"handoff to Tier {event.to_tier} by {event.actor.role}"
    if isinstance(event, CustomerReply):
        return f"customer reply by {event.actor.role}"
    if isinstance(event, ApplyPolicy):
        return f"policy change by {event.actor.role}"
    return name


def undelivered_in(result: object) -> list[UndeliveredMessage]:
    """The refusals among a notify activity's answers (one answer, or a list for a batch)."""
    answers = result if isinstance(result, list) else [result]
    refused = []
    for answer in answers:
        if isinstance(answer, dict) and "reason" in answer:
            with contextlib.suppress(ValidationError):
                refused.append(UndeliveredMessage.model_validate(answer))
    return refused


def take(effects: Sequence[Effect], count: int, limit: int) -> list[Effect]:
    """The first effects, at most ``count`` of them and ``limit`` bytes of JSON, at least one."""
    batch: list[Effect] = []
    size = 0
    for effect in effects[:count]:
        size += len(effect.model_dump_json())
        if batch and size > limit:
            break
        batch.append(effect)
    return batch


def summarize(batch: Sequence[Effect]) -> str:
    """What the UI shows on the activity: what the effects do, in a line."""
    if len(batch) > 1:
        noun = {"persist": "status changes", "notify": "emails"}.get(batch[0].kind, "effects")
        return f"{batch[0].kind} {len(batch)} {noun}"
    effect = batch[0]
    if isinstance(effect, Persist):
        return f"record {effect.history.to_status if effect.history else 'case'}"
    if isinstance(effect, Notify):
        return f"email {effect.template} to {effect.recipient}"
    return f"register with release {effect.release_id}"
