"""``SupportCase``: the durable shell around the pure lifecycle core.

Handlers validate a payload and hand the event to ``lifecycle.decide``; the run loop keeps one
timer for the next deadline (an absolute instant derived from state) and acts on it when it
fires; the recorder writes what each decision asks (the status rows, the outbox's messages, a
release registration) through one local activity, ``record``, in one database transaction. A
decision thus costs one workflow task and no activity round trip; the worker's mail relay sends
the outbox's messages outside any workflow, so a mail server that is down holds no case.
Signals arrive through one dynamic handler so that every payload, however malformed, is seen
raw and recorded rather than dropped by the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import bounds, integrity, lifecycle, metrics, search, trust
from workflows.contract import (
    CASE_WORKFLOW,
    ActivityName,
    ApplyPolicy,
    CaseInput,
    CustomerReply,
    Deadline,
    DecidingTask,
    Effect,
    HandlerName,
    MailUndelivered,
    Notify,
    Persist,
    PolicySettings,
    Record,
    RecordResult,
    RejectedEvent,
    ReleaseShipped,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
    UndeliveredMessage,
    case_workflow_id,
)
from workflows.effects import (
    EFFECT_BATCH_BYTES,
    POLICY_SETTINGS_TIMEOUT,
    RECORD_LOCAL_RETRY_THRESHOLD,
    RECORD_RETRY,
    RECORD_TIMEOUT,
)
from workflows.lifecycle import CarriedState, CaseState, Due, Rejection
from workflows.payloads import Malformed, check_size, decode_object, excerpt, explain

# Continue-as-new past this many events, far before Temporal's own limits: a case that is not in
# a worker's cache replays at most this much to answer (about a millisecond an event), and its
# cached run holds at most this many commands. A quiet case never gets near it.
CASE_HISTORY_BOUND = 400
# How long a pending continue-as-new waits for the record in flight before carrying it over.
DRAIN_WAIT = timedelta(minutes=10)

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
        self._pending: list[Effect] = []  # decided, not yet recorded
        self._recording = False  # a record is in flight
        # Set when effects are queued. The recorder waits on it, not on a condition, so the run
        # loop is the only condition waiter: an activation that issued no command (a refused
        # signal) then changes no later command's order, however the server groups the jobs.
        self._wake = asyncio.Event()
        self._draining = False
        self._start_error: str | None = None
        self._opened_now = False  # this run opened the case (not a continued run)
        self._opening: asyncio.Task[None] | None = None  # the opening's record, until it answers
        self._parked: Deadline | None = None  # a deadline the core failed on; waits for an event
        # The timer of the next deadline: kept while the deadline stays, whatever else happens.
        self._timer: asyncio.Task[None] | None = None
        self._armed: Deadline | None = None
        self._rang = False
        # Search attributes and details are published once per activation, not once per event,
        # so a flood of signals in one activation stays one cheap workflow task.
        self._changed = True
        self._logged_at: datetime | None = None  # the instant (task) of the last logged rejection
        self._logged = 0
        self._state: CaseState
        info = workflow.info()
        # What the starter (or the run before) set: only what differs is upserted.
        self._search = search.current(info.typed_search_attributes)
        # Trusted senders, if this worker is configured with them (README "Trust model").
        self._senders = trust.installed(info.task_queue)
        try:
            # Decoded without the event size limit: the state a continued run carries is
            # routinely bigger than any event (a new case's input is checked against it below).
            data = decode_object([start], "start input", limit=None)
            if "carried" in data:
                carried = CarriedState.model_validate(data)
                self._start_error = integrity.carried_case_problem(
                    info.workflow_id, info.continued_run_id, carried.carried.case.case_number
                )
                self._state = carried.carried
                self._pending.extend(carried.effects)
            else:
                check_size([start], "start input")  # a new case: the event size limit
                case = CaseInput.model_validate(data)
                self._start_error = integrity.new_case_problem(info.workflow_id, case.case_number)
                opener = info.first_execution_run_id or info.run_id
                # A case moved in from another help desk opens in its status (README "Moving in").
                opening = lifecycle.import_case if case.imported else lifecycle.open_case
                decision = opening(
                    case, workflow.now(), senders=self._senders, opened_by_run=opener
                )
                self._opened_now = True
                self._state = decision.state
                self._pending.extend(decision.effects)
        except (Malformed, ValidationError, Rejection) as err:
            self._start_error = explain(err)
        except Exception as err:  # a bug of the core: the start fails with it, never the task
            self._start_error = f"the case could not open: {err!r}"[:1_000]
        if self._start_error is not None:
            self._pending.clear()  # a refused start runs no effect

    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        if self._start_error is not None:
            raise ApplicationError(
                f"invalid case input: {self._start_error}",
                type="InvalidCaseInput",
                non_retryable=True,
            )
        if self._opened_now:
            # Counted before the first await: the activation after a local activity's result
            # can count as replaying, and a replay records no metric.
            metrics.transition(None, self._state.status)
            # The policy first: a start it refuses must not claim the number (nor record any
            # effect); then the claim, in the record of the opening (one transaction). The clock
            # runs meanwhile: a case opened while the store is down acts on its deadlines on time.
            await self._resolve_policy()
            self._opening = asyncio.create_task(self._open())
        recorder = asyncio.create_task(self._record_loop(self._opening))
        while True:
            while self._state.status is not Status.CLOSED and not self._should_continue_as_new():
                await self._step()
                self._opened()
            self._publish()
            if self._state.status is Status.CLOSED:
                await workflow.wait_condition(lambda: not self._pending and not self._recording)
                self._opened()
                recorder.cancel()
                return lifecycle.snapshot(self._state)
            self._opened()
            await self._continue_as_new(recorder)  # returns only while the effects do not fit

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
            # At the opening instant: the task that hears the result may be a later one (a case
            # moved in opened long ago, elsewhere: here, at its import).
            opened = self._state.imported_at or self._state.opened_at
            self._commit(lifecycle.resolve_policy(self._state, settings, opened))
        except Exception as err:
            message = err.message if isinstance(err, Rejection) else repr(err)
            raise ApplicationError(
                f"invalid case input: {message}",
                type="InvalidCaseInput",
                non_retryable=True,
            ) from None

    def _opened(self) -> None:
        """Once the opening's record has answered: raise the start's failure, if it failed."""
        if self._opening is not None and self._opening.done():
            opening, self._opening = self._opening, None
            opening.result()

    async def _open(self) -> None:
        """The opening's record claims the number for this run before anything is written: a
        reused number must not mail or overwrite the first case."""
        run_id = self._state.opened_by_run
        assert run_id is not None
        try:
            result = await self._record(take(self._pending, EFFECT_BATCH_BYTES), claim=run_id)
        except ActivityError as err:  # retries are unlimited: a bug, and the case cannot open
            raise ApplicationError(
                f"the case could not open: {err.cause or err}",
                type="InvalidCaseInput",
                non_retryable=True,
            ) from None
        if result.owner != run_id:
            self._pending.clear()
            raise ApplicationError(
                integrity.number_taken(self._state.case.case_number, result.owner),
                type="CaseNumberTaken",
                non_retryable=True,
            )

    # ---- the clock ----------------------------------------------------------------------------

    async def _step(self) -> None:
        """Act on a deadline that is due, or wait for the next one or for an event."""
        self._publish()
        due = lifecycle.next_deadline(self._state)
        if due is not None and due == self._parked:
            due = None  # the core failed on it: wait for an event to change the state
        if due is not None and due.at <= workflow.now():
            self._arm(None)
            self._apply_deadline(due)
            return
        self._arm(due)
        seq = self._state.seq
        await workflow.wait_condition(
            lambda: (
                self._state.seq != seq
                or self._changed
                or self._rang
                or self._should_continue_as_new()
                or (self._opening is not None and self._opening.done())
            )
        )
        if self._rang:  # its instant has come: acted on in the next pass, against the clock
            self._rang, self._timer, self._armed = False, None, None

    def _arm(self, due: Deadline | None) -> None:
        """One timer for the next deadline, started when it changes and kept while it stays (an
        event that moves no deadline costs no timer)."""
        if due == self._armed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed = None, due
        if due is not None:
            summary = f"{due.action}: {lifecycle.describe(due)} at {due.at:%Y-%m-%d %H:%M:%S} UTC"
            self._timer = asyncio.create_task(self._ring(due.at - workflow.now(), summary))

    async def _ring(self, left: timedelta, summary: str) -> None:
        await workflow.sleep(left, summary=summary)
        self._rang = True

    def _apply_deadline(self, due: Deadline) -> None:
        lateness = (workflow.now() - due.at).total_seconds()
        try:
            self._commit(self._decide(Due(due)))
        except Rejection as rejection:
            self._parked = due
            self._reject(f"deadline {due.action}", rejection.reason, rejection.message)
            return
        if self._state.imported_at is None or due.at >= self._state.imported_at:
            metrics.lateness(due.action, lateness)  # not what the clock of a moved-in case owed
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
        # run keeps taking events and deadlines, and nothing is dropped. So does an opening
        # whose record has not answered: the claim is this run's to make.
        return due and self._opening is None and bounds.effects_fit(self._pending)

    async def _continue_as_new(self, recorder: asyncio.Task[None]) -> None:
        # Let the record in flight finish, so the next run does not write the same effects
        # twice at once; a stuck one (the database down for long) is carried over and retried.
        self._draining = True
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not self._recording, timeout=DRAIN_WAIT)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not bounds.effects_fit(self._pending):
            self._draining = False  # events during the drain added more than fits: go on
            self._wake.set()
            return
        recorder.cancel()
        state = bounds.fit_state(self._state)
        workflow.continue_as_new(CarriedState(carried=state, effects=list(self._pending)))

    # ---- the record of each decision ----------------------------------------------------------

    async def _record_loop(self, opening: asyncio.Task[None] | None) -> None:
        if opening is not None:
            # Nothing is recorded before the claim; a refused opening records nothing at all.
            await workflow.wait([opening])
            if opening.exception() is not None:
                return
        if self._pending:
            self._wake.set()  # what a continued run carried, or what came during the opening
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._draining:
                try:
                    await self._record(take(self._pending, EFFECT_BATCH_BYTES))
                except ActivityError as err:
                    # Retries are unlimited, so this is a non-retryable failure: a bug.
                    workflow.logger.error("record failed", extra={"error": str(err)})

    async def _record(self, batch: list[Effect], claim: str | None = None) -> RecordResult:
        """Write ``batch`` through the ``record`` local activity; the batch leaves the pending
        effects once it is written (or failed for good)."""
        self._recording = True
        info = workflow.info()
        # Its messages wait for this task's completion (a lost task's retry may decide otherwise).
        task = DecidingTask(
            run_id=info.run_id, event_id=info.get_current_history_length(), at=workflow.now()
        )
        try:
            return await workflow.execute_local_activity(
                ActivityName.RECORD,
                Record(effects=batch, claim=claim, task=task),
                result_type=RecordResult,
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
                local_retry_threshold=RECORD_LOCAL_RETRY_THRESHOLD,
                summary=summarize(batch),
            )
        finally:
            self._recording = False
            done = {id(e) for e in batch}
            self._pending = [e for e in self._pending if id(e) not in done]

    # ---- events -------------------------------------------------------------------------------

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        if self._start_error is not None:
            return  # the run fails at once with the reason; there is no case to act on
        if name == HandlerName.MAIL_UNDELIVERED:
            self._on_undelivered(name, args)
            return
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

    def _on_undelivered(self, name: str, args: Sequence[RawValue]) -> None:
        """The mail relay's word that the server refused one of this case's messages for good:
        kept in the snapshot (a bounded tail, once per message); the case's status is unmoved."""
        try:
            event = MailUndelivered.model_validate(decode_object(args, name))
        except (Malformed, ValidationError) as err:
            self._reject(name, "malformed", explain(err), excerpt=excerpt(args))
            return
        prefix = f"{case_workflow_id(self._state.case.case_number)}:"
        if not event.key.startswith(prefix):
            self._reject(name, "other_case", f"message {event.key[:80]} is not this case's")
            return
        if self._senders is not None:
            audience = case_workflow_id(self._state.case.case_number)
            refused = trust.verify_event(self._senders, event, audience, workflow.now())
            if refused is not None:
                self._reject(name, refused.reason, refused.message)
                return
        refusal = UndeliveredMessage(key=event.key, template=event.template, reason=event.reason)
        self._state = lifecycle.record_undelivered(self._state, [refusal])
        self._changed = True

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
        self._pending.extend(decision.effects)
        self._changed = True
        self._parked = None
        if decision.effects:
            self._wake.set()

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


def take(effects: Sequence[Effect], limit: int) -> list[Effect]:
    """The first effects, at most ``limit`` bytes of JSON, at least one."""
    batch: list[Effect] = []
    size = 0
    for effect in effects:
        size += len(effect.model_dump_json())
        if batch and size > limit:
            break
        batch.append(effect)
    return batch


def summarize(batch: Sequence[Effect]) -> str:
    """What the UI shows on the record: what it writes, in a line."""
    parts: list[str] = []
    for effect in batch[:4]:
        if isinstance(effect, Persist):
            parts.append(f"record {effect.history.to_status if effect.history else 'case'}")
        elif isinstance(effect, Notify):
            parts.append(f"email {effect.template} to {effect.recipient}")
        else:
            parts.append(f"register with release {effect.release_id}")
    more = f" and {len(batch) - 4} more" if len(batch) > 4 else ""
    return ", ".join(parts) + more
