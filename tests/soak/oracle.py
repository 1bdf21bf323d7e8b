"""The model a soak is checked against: a case's workflow histories, replayed through the pure core.

Random traffic under random faults has no fixed plan: which events a case took, and in which
order relative to its deadlines, is only known afterwards. The histories say it: every signal
and accepted update the case took, the activation (workflow task) that took it, and that
activation's instant, which is the ``now`` the shell handed the core. Replaying those inputs
through ``lifecycle`` (the same rules the shell follows: events first, then every deadline due
at that instant whenever the run loop wakes) gives the effects a correct run produces; the SMTP
sink and the case store must hold exactly those, whatever crashed on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.common import RawValue

from activities.mailer import message_id
from workflows import bounds, lifecycle
from workflows.case import EVENTS
from workflows.contract import (
    CaseInput,
    Notify,
    Persist,
    PolicySettings,
    Register,
    Status,
    case_workflow_id,
)
from workflows.payloads import Malformed, decode_object

E = EventType
# The case's local activities: an opening run's first reads the policy settings, its second is
# the opening's record, which claims the number (the run loop starts once the settings are read,
# without waiting for the claim; the claim's answer wakes it).
LOCAL_ACTIVITY_MARKER = "core_local_activity"
# Failures the server records on its own (tests/reliability/harness.py, failed_workflow_tasks).
SERVER_CLOSED = (
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND,
)


@dataclass
class Replayed:
    """One case as its histories say it went."""

    case_number: str
    state: lifecycle.CaseState | None = None
    message_ids: list[str] = field(default_factory=list)  # every email it must send, in order
    history_seqs: list[int] = field(default_factory=list)  # every status change (one row each)
    policy_seqs: list[int] = field(default_factory=list)  # every policy change (one row each)
    releases: set[str] = field(default_factory=set)  # releases it registered with
    events: int = 0  # signals and accepted updates it took
    duplicates: int = 0  # of those, ignored as a repeated event id
    rejected: int = 0  # of those, refused by the rules
    deadlines: int = 0  # deadlines acted
    runs: int = 0
    failed_tasks: list[str] = field(default_factory=list)  # WorkflowTaskFailed: a bug
    closed: bool = False  # the workflow completed
    problems: list[str] = field(default_factory=list)


async def run_histories(
    client: Client, case_number: str, first_run_id: str
) -> list[tuple[str, list[HistoryEvent]]]:
    """Every run of the case, first to last (following continue-as-new)."""
    workflow_id = case_workflow_id(case_number)
    runs: list[tuple[str, list[HistoryEvent]]] = []
    run_id: str | None = first_run_id
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        events = [e async for e in handle.fetch_history_events()]
        runs.append((run_id, events))
        run_id = None
        for event in events:
            if event.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                attrs = event.workflow_execution_continued_as_new_event_attributes
                run_id = attrs.new_execution_run_id
    return runs


def _when(event: HistoryEvent) -> datetime:
    """The instant as ``workflow.now()`` reads it (the SDK's float seconds, not truncation)."""
    return datetime.fromtimestamp(event.event_time.ToNanoseconds() / 1e9, UTC)


@dataclass
class _Job:
    order: int  # the history position the shell takes it at
    name: str  # signal or update name; "" for a timer or the claim
    raw: Sequence[RawValue] = ()
    timer: bool = False
    claim: bool = False


def replay(
    case_number: str,
    runs: Sequence[tuple[str, Sequence[HistoryEvent]]],
    settings: PolicySettings,
) -> Replayed:
    """The case's inputs, from its histories, through the pure core."""
    out = Replayed(case_number)
    state: lifecycle.CaseState | None = None
    effects: list[object] = []
    for index, (run_id, events) in enumerate(runs):
        out.runs += 1
        case: CaseInput | None = None
        loop_running = index > 0  # a continued run enters its loop at once
        first_activation = True
        pending: list[_Job] = []
        started_at: datetime | None = None
        local_activities = 0
        if index > 0 and state is not None:
            state = bounds.fit_state(state)
        for position, event in enumerate(events):
            kind = event.event_type
            if kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                attrs = event.workflow_execution_started_event_attributes
                if index == 0:
                    data = decode_object([RawValue(p) for p in attrs.input.payloads], "start")
                    case = CaseInput.model_validate(data)
            elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attrs_s = event.workflow_execution_signaled_event_attributes
                raw = [RawValue(p) for p in attrs_s.input.payloads]
                pending.append(_Job(event.event_id, attrs_s.signal_name, raw))
            elif kind == E.EVENT_TYPE_TIMER_FIRED:
                pending.append(_Job(event.event_id, "", timer=True))
            elif kind == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                started_at = _when(event)
            elif kind == E.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                attrs_f = event.workflow_task_failed_event_attributes
                if attrs_f.cause not in SERVER_CLOSED:
                    cause = WorkflowTaskFailedCause.Name(attrs_f.cause)
                    out.failed_tasks.append(f"{run_id}: {cause} {attrs_f.failure.message}")
            elif kind == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                assert started_at is not None
                now = started_at
                # What this activation did is written right after its completion: the updates it
                # accepted, and the local activities that resolved in it.
                settings_read = False
                for later in events[position + 1 :]:
                    if later.event_type == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                        break
                    if later.event_type == E.EVENT_TYPE_MARKER_RECORDED:
                        name = later.marker_recorded_event_attributes.marker_name
                        if name == LOCAL_ACTIVITY_MARKER and index == 0:
                            local_activities += 1
                            settings_read = settings_read or local_activities == 1
                            if local_activities == 2:
                                pending.append(_Job(later.event_id, "", claim=True))
                    if later.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                        attrs_u = later.workflow_execution_update_accepted_event_attributes
                        request = attrs_u.accepted_request.input
                        raw = [RawValue(p) for p in request.args.payloads]
                        order = attrs_u.accepted_request_sequencing_event_id
                        pending.append(_Job(order, request.name, raw))
                if state is None:
                    # The case opens in the first activation (``__init__``); the policy settings
                    # follow once their local activity answers, after that activation's signals.
                    assert case is not None, f"{case_number}: no start input"
                    decision = lifecycle.open_case(case, now, opened_by_run=run_id)
                    state = decision.state
                    effects += decision.effects
                # Signals and updates first (in history order), then what woke the loop.
                pending.sort(key=lambda j: (j.timer or j.claim, j.order))
                wake = index > 0 and first_activation
                for job in pending:
                    if job.timer:
                        wake = True
                        continue
                    if job.claim:
                        wake = True
                        continue
                    out.events += 1
                    state, changed, added = _take(out, state, job, now)
                    effects += added
                    wake = wake or changed
                if settings_read:
                    decision = lifecycle.resolve_policy(state, settings, now)
                    state = decision.state
                    effects += decision.effects
                    loop_running = wake = True
                pending = []
                first_activation = False
                if loop_running and wake:
                    state, added = _deadlines(out, state, now)
                    effects += added
            elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                out.closed = True
    out.state = state
    for effect in effects:
        if isinstance(effect, Notify):
            out.message_ids.append(message_id(effect.key))
        elif isinstance(effect, Persist):
            if effect.history is not None:
                out.history_seqs.append(effect.history.seq)
            if effect.policy_change is not None:
                out.policy_seqs.append(effect.policy_change.seq)
        elif isinstance(effect, Register):
            out.releases.add(effect.release_id)
    return out


def _take(
    out: Replayed, state: lifecycle.CaseState, job: _Job, now: datetime
) -> tuple[lifecycle.CaseState, bool, list[object]]:
    """One signal or update, as the shell's handlers take it: (state, woke the loop, effects)."""
    model: type[BaseModel] | None = EVENTS.get(job.name)
    try:
        if model is None:
            raise Malformed(f"unknown signal {job.name!r}")
        event = model.model_validate(decode_object(job.raw, job.name))
    except (Malformed, ValidationError):
        out.rejected += 1
        return state, True, []
    if lifecycle.is_duplicate(state, getattr(event, "event_id", None)):
        out.duplicates += 1
        return state, False, []
    try:
        decision = lifecycle.decide(state, event, now)  # type: ignore[arg-type]
    except lifecycle.Rejection:
        out.rejected += 1
        return state, True, []
    return decision.state, True, list(decision.effects)


def _deadlines(
    out: Replayed, state: lifecycle.CaseState, now: datetime
) -> tuple[lifecycle.CaseState, list[object]]:
    """Every deadline due at ``now``, in turn, as the run loop acts on them."""
    effects: list[object] = []
    while state.status is not Status.CLOSED and (due := lifecycle.next_deadline(state)):
        if due.at > now:
            break
        try:
            decision = lifecycle.decide(state, lifecycle.Due(due), now)
        except lifecycle.Rejection as rejection:
            out.problems.append(f"deadline {due.action} refused: {rejection.message}")
            break
        out.deadlines += 1
        state = decision.state
        effects += decision.effects
    return state, effects
