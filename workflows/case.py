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

from activities.options import BATCH_BYTES, EFFECT_LANES, EFFECT_OPTIONS, EffectOptions
from workflows import lifecycle, metrics, search
from workflows.contract import (
    CASE_WORKFLOW,
    CaseInput,
    CustomerReply,
    Deadline,
    Effect,
    Notify,
    Persist,
    RejectedEvent,
    ReleaseShipped,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
)
from workflows.lifecycle import CarriedState, CaseState, Due, Rejection
from workflows.payloads import Malformed, decode_object, excerpt, explain

# Continue-as-new well before Temporal's own limits; a quiet case never gets near this.
HISTORY_BOUND = 1_500
# How long a pending continue-as-new waits for the activities in flight before carrying them over.
DRAIN_WAIT = timedelta(minutes=10)
# Runs that record this marker run their effects in lanes (per kind, batched); runs started
# before it existed replay their one-at-a-time effects unchanged (README, "Changing the workflow").
EFFECT_LANES_PATCH = "effect-lanes"

# Rejections logged one by one per workflow task; past that, one line says how the rest are
# seen (the metric counts each, the snapshot keeps the last): logging a flood line by line cost
# most of a thousand-signal task, which then overran the SDK's two-second deadlock limit.
LOGGED_REJECTIONS = 20

EVENTS: dict[str, type[BaseModel]] = {
    "customer_reply": CustomerReply,
    "tier_handoff": TierHandoff,
    "transition": TransitionRequest,
    "release_shipped": ReleaseShipped,
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
        # Search attributes and details are published once per activation, not once per event:
        # a flood of a thousand signals in one activation must stay one cheap workflow task.
        self._changed = True
        self._logged_at: datetime | None = None  # the instant (task) of the last logged rejection
        self._logged = 0
        self._state: CaseState
        try:
            # The state a continued run carries (tails of history, rejections, seen event ids,
            # effects not yet done) is routinely bigger than any event: the event limit applied
            # to it failed the next run of every case whose state outgrew 64 KiB, for good.
            data = decode_object([start], "start input", limit=None)
            if "carried" in data:
                carried = CarriedState.model_validate(data)
                self._state = carried.carried
                self._effects.extend(carried.effects)
            else:
                decode_object([start], "start input")  # a new case: the event size limit
                decision = lifecycle.open_case(CaseInput.model_validate(data), workflow.now())
                self._opened_now = True
                self._state = decision.state
                self._effects.extend(decision.effects)
        except (Malformed, ValidationError, Rejection) as err:
            self._start_error = explain(err)

    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        if self._start_error is not None:
            raise ApplicationError(
                f"invalid case input: {self._start_error}",
                type="InvalidCaseInput",
                non_retryable=True,
            )
        if self._opened_now:
            metrics.transition(None, self._state.status)
        pump = asyncio.create_task(
            self._run_lanes() if workflow.patched(EFFECT_LANES_PATCH) else self._run_in_order()
        )
        while self._state.status is not Status.CLOSED and not self._should_continue_as_new():
            await self._sleep_until_next_deadline()
        self._publish_if_changed()
        if self._state.status is Status.CLOSED:
            await workflow.wait_condition(lambda: not self._effects and not self._running)
            pump.cancel()
            return lifecycle.snapshot(self._state)
        await self._continue_as_new(pump)
        raise AssertionError("unreachable: continue_as_new does not return")

    # ---- the clock ----------------------------------------------------------------------------

    async def _sleep_until_next_deadline(self) -> None:
        self._publish_if_changed()
        due = lifecycle.next_deadline(self._state)
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
        self._commit(lifecycle.decide(self._state, Due(due), workflow.now()))
        metrics.lateness(due.action, lateness)
        workflow.logger.info(
            "deadline acted",
            extra={"action": str(due.action), "due": due.at.isoformat(), "lateness_s": lateness},
        )

    # ---- continue-as-new ----------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_BOUND
        )

    async def _continue_as_new(self, pump: asyncio.Task[None]) -> None:
        # Let the activities in flight finish, so the next run does not start the same effects
        # twice at once; stuck ones (SMTP down for long) are carried over and retried.
        self._draining = True
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not self._running, timeout=DRAIN_WAIT)
        await workflow.wait_condition(workflow.all_handlers_finished)
        pump.cancel()
        workflow.continue_as_new(CarriedState(carried=self._state, effects=list(self._effects)))

    # ---- effects ------------------------------------------------------------------------------

    async def _run_lanes(self) -> None:
        await asyncio.gather(*(self._lane(kind, options) for kind, options in EFFECT_LANES.items()))

    async def _lane(self, kind: str, options: EffectOptions) -> None:
        def pending() -> list[Effect]:
            return [e for e in self._effects if e.kind == kind]

        while True:
            await workflow.wait_condition(lambda: not self._draining and bool(pending()))
            batch = take(pending(), options.batch, BATCH_BYTES)
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

    async def _run_in_order(self) -> None:
        """The effects of a run started before the lanes: one at a time, in order."""
        while True:
            await workflow.wait_condition(lambda: bool(self._effects) and not self._draining)
            effect = self._effects[0]
            self._running.add("any")
            try:
                await self._execute(EFFECT_OPTIONS[effect.kind], [effect])
            except ActivityError as err:
                workflow.logger.error("effect failed", extra={"key": effect.key, "error": str(err)})
            finally:
                self._running.discard("any")
            self._effects.popleft()

    async def _execute(self, options: EffectOptions, batch: list[Effect]) -> None:
        await workflow.execute_activity(
            options.activity,
            batch if options.batch > 1 else batch[0],
            start_to_close_timeout=options.start_to_close,
            heartbeat_timeout=options.heartbeat,
            retry_policy=options.retry,
            summary=summarize(batch),
        )

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
            self._accept(name, event)  # type: ignore[arg-type]
        except Rejection as rejection:
            self._reject(name, rejection.reason, rejection.message, event=event)

    @workflow.update(name="customer_reply")
    def customer_reply_update(self, arg: RawValue) -> Snapshot:
        return self._update("customer_reply", arg)

    @customer_reply_update.validator
    def _validate_customer_reply(self, arg: RawValue) -> None:
        self._validate("customer_reply", arg)

    @workflow.update(name="tier_handoff")
    def tier_handoff_update(self, arg: RawValue) -> Snapshot:
        return self._update("tier_handoff", arg)

    @tier_handoff_update.validator
    def _validate_tier_handoff(self, arg: RawValue) -> None:
        self._validate("tier_handoff", arg)

    @workflow.update(name="transition")
    def transition_update(self, arg: RawValue) -> Snapshot:
        return self._update("transition", arg)

    @transition_update.validator
    def _validate_transition(self, arg: RawValue) -> None:
        self._validate("transition", arg)

    @workflow.query(name="snapshot")
    def snapshot(self) -> Snapshot:
        return lifecycle.snapshot(self._state)

    def _validate(self, name: str, arg: RawValue) -> None:
        """Run the same ``decide`` the handler will; a rejection never reaches history."""
        if self._start_error is not None:
            raise ApplicationError(f"invalid case input: {self._start_error}", non_retryable=True)
        event = self._parse(name, arg)
        if lifecycle.is_duplicate(self._state, event.event_id):  # type: ignore[attr-defined]
            return
        try:
            lifecycle.decide(self._state, event, workflow.now())  # type: ignore[arg-type]
        except Rejection as rejection:
            raise ApplicationError(
                lifecycle.describe_rejection(self._state, _asked(name, event), rejection),
                rejection.reason,
                type="CaseEventRejected",
                non_retryable=True,
            ) from None

    def _update(self, name: str, arg: RawValue) -> Snapshot:
        self._accept(name, self._parse(name, arg))  # type: ignore[arg-type]
        return lifecycle.snapshot(self._state)

    def _parse(self, name: str, arg: RawValue) -> BaseModel:
        try:
            return EVENTS[name].model_validate(decode_object([arg], name))
        except (Malformed, ValidationError) as err:
            raise ApplicationError(
                f"malformed {name}: {explain(err)}",
                "malformed",
                type="CaseEventRejected",
                non_retryable=True,
            ) from None

    def _accept(
        self, name: str, event: CustomerReply | TierHandoff | TransitionRequest | ReleaseShipped
    ) -> None:
        if lifecycle.is_duplicate(self._state, getattr(event, "event_id", None)):
            workflow.logger.info("duplicate event ignored", extra={"event": name})
            return
        self._commit(lifecycle.decide(self._state, event, workflow.now()))

    def _commit(self, decision: lifecycle.Decision) -> None:
        before = self._state.status
        self._state = decision.state
        if self._state.status is not before:
            metrics.transition(before, self._state.status)
        self._effects.extend(decision.effects)
        self._changed = True

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
            event=name,
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
                "event rejected", extra={"event": name, "reason": reason, "detail": detail}
            )
        elif self._logged == LOGGED_REJECTIONS + 1:
            workflow.logger.warning(
                "more events rejected in this workflow task: counted in "
                "case_rejected_events_total, the last ones kept in the snapshot",
                extra={"logged": LOGGED_REJECTIONS},
            )

    # ---- what ops see -------------------------------------------------------------------------

    def _publish_if_changed(self) -> None:
        """Keep search attributes and the UI's current details in step with the state."""
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
    return name


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
