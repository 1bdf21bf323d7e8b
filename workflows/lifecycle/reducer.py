"""The pure reducer: ``decide(state, event, now)`` returns the new state and the effects to run,
or raises a ``Rejection`` with its reason. It never mutates the state it is given."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from workflows import trust
from workflows.calendar import Span
from workflows.contract import (
    Actor,
    ApplyPolicy,
    CaseInput,
    CustomerReply,
    Deadline,
    DeadlineKind,
    DeadlinePolicy,
    Effect,
    HistoryEntry,
    HistoryRecord,
    MessageTemplate,
    Notify,
    Persist,
    PolicyChange,
    PolicyChangeRecord,
    PolicyFieldChange,
    PolicyOverrides,
    PolicySettings,
    Register,
    ReleaseShipped,
    Role,
    Status,
    TierHandoff,
    TransitionRequest,
    case_workflow_id,
)
from workflows.lifecycle.deadlines import (
    ON_TIME,
    a_late_move,
    describe,
    next_deadline,
    settle_past,
)
from workflows.lifecycle.record import case_record
from workflows.lifecycle.state import (
    HISTORY_TAIL,
    POLICY_CHANGES_TAIL,
    RECENT_TAIL,
    SEEN_EVENT_IDS,
    CaseState,
    Decision,
    Due,
    Event,
    Rejection,
)
from workflows.lifecycle.table import OPENERS, POLICY_ROLES, Via, check_move, rules_from

# The workflow's own clock: the only actor of the table's timer rows.
SYSTEM = Actor(role=Role.SYSTEM, name="lifecycle")

Recipient = Literal["contact", "support", "development"]

# The message a case's contact gets on entering these statuses.
_ENTRY_MESSAGES = {
    Status.PENDING_CUSTOMER_RESPONSE: MessageTemplate.INFORMATION_REQUESTED,
    Status.PENDING_RELEASE: MessageTemplate.PENDING_RELEASE,
    Status.CLOSING: MessageTemplate.CLOSING,
    Status.CLOSED: MessageTemplate.CLOSED,
}


# ---- opening and policy ----------------------------------------------------------------------


def open_case(
    case: CaseInput,
    now: datetime,
    *,
    senders: trust.TrustedSenders | None = None,
    opened_by_run: str | None = None,
) -> Decision:
    """Open the case under the guide's default policy and the opener's overrides; the worker's
    default policy, when it has one, follows as ``resolve_policy``."""
    _check_proof(senders, case, case.case_number, now)
    if case.opened_by.role not in OPENERS:
        raise Rejection(
            "wrong_role", f"a case is opened by a customer or tier1, not {case.opened_by.role}"
        )
    _check_institution(case, case.opened_by)
    note = "case opened"
    if case.policy is not None and case.opened_by.role is Role.CUSTOMER:
        # Deadlines are the organisation's promise: a customer opens with the defaults.
        case = case.model_copy(update={"policy": None})
        note = "case opened (a customer's deadline policy is not used: the defaults apply)"
    state = CaseState(
        # The proof is checked; it is not carried for the case's life.
        case=case.model_copy(update={"proof": None}) if case.proof else case,
        policy=_with_fields(DeadlinePolicy(), case.policy),
        status=Status.NEW,
        status_since=now,
        opened_at=now,
        opened_by_run=opened_by_run,
    )
    effects: list[Effect] = []
    _record_change(state, None, Status.NEW, case.opened_by, note, now, effects)
    effects.append(_notify(state, MessageTemplate.OPENED, "contact"))
    return Decision(state, effects)


def resolve_policy(state: CaseState, settings: PolicySettings, now: datetime) -> Decision:
    """Take the worker's policy settings at open: its default under the opener's overrides, and
    the shortest span allowed. Raises ``Rejection`` when the result breaks a bound."""
    state = state.model_copy(update={"shortest_span": settings.shortest})
    policy = _with_fields(_with_fields(DeadlinePolicy(), settings.default), state.case.policy)
    _check_shortest(policy, settings.shortest)
    effects: list[Effect] = []
    _change_policy(
        state,
        policy,
        SYSTEM,
        "the organisation's default policy (CASES_DEFAULT_POLICY)",
        now,
        effects,
    )
    if state.imported_at is not None:  # moved in: what its clock passed before is not sent
        state = settle_past(state, state.imported_at)
    return Decision(state, effects)


def _with_fields(policy: DeadlinePolicy, overrides: PolicyOverrides | None) -> DeadlinePolicy:
    try:
        return policy.with_fields(overrides)
    except ValueError as err:
        raise Rejection("policy", _first_error(err)) from None


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", err)).removeprefix("Value error, ")
    return str(err)


def _check_shortest(policy: DeadlinePolicy, shortest: Span) -> None:
    for name in type(policy).model_fields:
        span = getattr(policy, name)
        if span.length() < shortest.length():
            raise Rejection(
                "policy",
                f"{name} is {span}; a deadline lies between {shortest.words()} "
                "and 120 months (10 years)",
            )


def _change_policy(
    state: CaseState,
    policy: DeadlinePolicy,
    actor: Actor,
    reason: str,
    now: datetime,
    effects: list[Effect],
) -> None:
    """Replace the policy; deadlines follow from state, so the current stay's are recomputed
    from its entry, and the per-stay counters keep a deadline that acted from acting again."""
    changes = [
        PolicyFieldChange(field=name, old=str(old), new=str(new))
        for name in type(policy).model_fields
        if (old := getattr(state.policy, name)) != (new := getattr(policy, name))
    ]
    if not changes:
        return
    state.policy = policy
    state.seq += 1
    change = PolicyChange(seq=state.seq, at=now, actor=actor, reason=reason, changes=changes)
    state.policy_changes = [*state.policy_changes, change][-POLICY_CHANGES_TAIL:]
    fields = ", ".join(f"{item.field} {item.old} → {item.new}" for item in changes)
    _remember(state, now, f"policy changed by {actor.role} {actor.name}: {fields}")
    effects.append(
        Persist(
            key=_key(state, "persist"),
            case=case_record(state),
            policy_change=PolicyChangeRecord(
                case_number=state.case.case_number, **change.model_dump()
            ),
        )
    )


# ---- events ----------------------------------------------------------------------------------


def decide(
    state: CaseState, event: Event, now: datetime, senders: trust.TrustedSenders | None = None
) -> Decision:
    """Apply one event at instant ``now``. Raises ``Rejection``; never mutates ``state``.
    With ``senders`` (trusted senders configured) an event's actor must come with a proof."""
    _check_proof(senders, event, state.case.case_number, now)
    if state.status is Status.CLOSED:
        raise Rejection(
            "closed",
            f"case {state.case.case_number} is closed; open a new case referencing it",
        )
    # Shallow is enough: every change below assigns a field, never mutates a shared list or
    # model, and a deep copy of the history tail would cost milliseconds an event.
    state = state.model_copy()
    effects: list[Effect] = []
    match event:
        case Due(deadline=deadline):
            _on_deadline(state, deadline, now, effects)
        case ReleaseShipped():
            _on_release_shipped(state, event, now, effects)
        case CustomerReply():
            _check_actor(state, event.actor)
            _on_reply(state, event, now, effects)
        case TierHandoff():
            _check_actor(state, event.actor)
            dst = Status.TIER2_NEW if event.to_tier == 2 else Status.TIER2_CLOSED
            check_move(state, dst, event.actor, Via.TIER_HANDOFF, None)
            note = f"{event.reason}: {event.note}" if event.note else event.reason
            _enter(state, dst, event.actor, note, now, effects)
        case TransitionRequest():
            _check_actor(state, event.actor)
            check_move(state, event.to, event.actor, Via.TRANSITION, event)
            if event.to is Status.PENDING_RELEASE:
                _set_release(state, event.release_id)
            _enter(state, event.to, event.actor, event.note, now, effects)
        case ApplyPolicy():
            _check_actor(state, event.actor)
            if event.actor.role not in POLICY_ROLES:
                roles = ", ".join(sorted(POLICY_ROLES))
                raise Rejection(
                    "wrong_role", f"a policy is applied by {roles}, not {event.actor.role}"
                )
            policy = _with_fields(state.policy, event.policy)
            _check_shortest(policy, state.shortest_span)
            _change_policy(state, policy, event.actor, event.reason, now, effects)
    event_id = getattr(event, "event_id", None)
    if event_id:
        state.seen_event_ids = [*state.seen_event_ids, event_id][-SEEN_EVENT_IDS:]
    return Decision(state, effects)


# ---- checks ----------------------------------------------------------------------------------


def _check_proof(
    senders: trust.TrustedSenders | None, event: object, case_number: str, now: datetime
) -> None:
    """The guard of trusted senders: any event with an ``actor`` and a ``proof`` (the start
    input's is ``opened_by``), checked at ``now`` only, so replay gives the same answer."""
    if senders is None:
        return
    if isinstance(event, CaseInput):
        refused = trust.verify(
            senders,
            event.proof,
            audience=case_workflow_id(case_number),
            actor=event.opened_by,
            event_id=None,
            now=now,
        )
    else:
        refused = trust.verify_event(senders, event, case_workflow_id(case_number), now)
    if refused is not None:
        raise Rejection(refused.reason, refused.message)


def _check_actor(state: CaseState, actor: Actor) -> None:
    if actor.role is Role.SYSTEM:
        raise Rejection(
            "forged_system",
            "the system role is the workflow's own; it is never accepted from outside",
        )
    _check_institution(state.case, actor)


def _check_institution(case: CaseInput, actor: Actor) -> None:
    if actor.role is Role.CUSTOMER and actor.institution != case.institution:
        raise Rejection(
            "wrong_institution",
            f"a customer of {actor.institution or 'no institution'} "
            f"cannot act on a case of another institution ({case.institution})",
        )


# ---- handlers --------------------------------------------------------------------------------


def _set_release(state: CaseState, release_id: str | None) -> None:
    # De-duplicate release_shipped by release id: re-entering for the same (shipped) release keeps
    # its ship instant; another release starts unshipped.
    if release_id != state.release_id:
        state.release_shipped_at = None
    state.release_id = release_id


def _on_reply(state: CaseState, reply: CustomerReply, now: datetime, effects: list[Effect]) -> None:
    if reply.actor.role is not Role.CUSTOMER:
        raise Rejection(
            "wrong_role", f"customer_reply comes from the customer, not {reply.actor.role}"
        )
    state.comments += 1
    if rules_from(state.status, Via.CUSTOMER_REPLY):
        _enter(state, Status.WAITING_FOR_PROCESS, reply.actor, excerpt(reply.text), now, effects)
    else:
        # No reply transition here: the reply is kept as a comment and the owner tier told.
        _step(state, now, f"comment from {reply.actor.name} (kept; status unchanged)")
    effects.append(_notify(state, MessageTemplate.CUSTOMER_COMMENT, "support", text=reply.text))


def _on_release_shipped(
    state: CaseState, event: ReleaseShipped, now: datetime, effects: list[Effect]
) -> None:
    if event.release_id != state.release_id:
        raise Rejection(
            "other_release",
            f"release {event.release_id} shipped, "
            f"but this case waits on {state.release_id or 'no release'}",
        )
    if state.release_shipped_at is not None:
        return  # already known: a second delivery has no effect
    # A ship instant in the future cannot be true yet; clamp so the clock cannot be pushed out.
    state.release_shipped_at = min(event.shipped_at, now)
    _step(state, now, f"release {event.release_id} shipped")
    if state.status is Status.PENDING_RELEASE:
        effects.append(_notify(state, MessageTemplate.RELEASE_SHIPPED, "contact"))


def _on_deadline(
    state: CaseState, deadline: Deadline, now: datetime, effects: list[Effect]
) -> None:
    current = next_deadline(state)
    if current is None or current != deadline or now < deadline.at:
        raise Rejection("not_due", f"{deadline.action} is not due in {state.status}")
    late = now - deadline.at > ON_TIME
    overtaken = deadline.to is None and a_late_move(state, now)
    # On time, a deadline acts at its own instant, so the chain keeps the guide's instants; late
    # (no worker ran), the next stay counts from now and is never shortened by the outage.
    now = now if late else deadline.at
    if overtaken:
        # The move that is due too says it all (a Closing notice, the end of the work plan).
        if deadline.action is DeadlineKind.PCR_REMINDER:
            state.reminder_sent = True
        else:
            _review_done(state, now)
        _step(state, now, f"{describe(deadline)} not sent: a move is due at the same time")
        return
    match deadline.action:
        case DeadlineKind.PCR_REMINDER:
            state.reminder_sent = True
            _step(state, now, "reminder sent to the customer")
            effects.append(
                _notify(state, MessageTemplate.REMINDER, "contact", closes_at=next_deadline(state))
            )
        case DeadlineKind.WORK_PLAN_REVIEW:
            _review_done(state, now)
            _step(state, now, f"work-plan reassessment #{state.reviews_done}")
            teams: list[Recipient] = ["support", "development"]  # "by Support and Development"
            for team in teams:
                effects.append(
                    _notify(
                        state,
                        MessageTemplate.WORK_PLAN_REVIEW,
                        team,
                        review_number=state.reviews_done,
                    )
                )
        case _:
            _move_by_timer(state, deadline, now, effects)


def _move_by_timer(
    state: CaseState, deadline: Deadline, now: datetime, effects: list[Effect]
) -> None:
    assert deadline.to is not None
    rows = [
        rule for rule in rules_from(state.status, Via.DEADLINE) if rule.deadline is deadline.action
    ]
    assert rows and deadline.to in rows[0].targets, f"no timer row for {deadline.action}"
    _enter(state, deadline.to, SYSTEM, f"deadline {deadline.action}", now, effects, deadline.at)


def _review_done(state: CaseState, now: datetime) -> None:
    state.reviews_done += 1
    state.last_review_at = now


# ---- entering a status -----------------------------------------------------------------------


def _enter(
    state: CaseState,
    dst: Status,
    actor: Actor,
    note: str | None,
    now: datetime,
    effects: list[Effect],
    due: datetime | None = None,
) -> None:
    src = state.status
    state.came_from, state.status, state.status_since = src, dst, now
    state.reminder_sent, state.reviews_done, state.last_review_at = False, 0, None
    if dst is Status.TIER2_NEW:
        state.owner_tier = 2
    elif dst is Status.TIER2_CLOSED:
        state.owner_tier = 1
    elif src is Status.DEVELOPMENT and dst is Status.TIER2_ANALYSIS:
        state.owner_tier = 2  # not a defect: back to Tier 2, which now owns the analysis
    if dst is Status.CLOSED:
        state.closed_at = now
    _record_change(state, src, dst, actor, note, now, effects, due)
    template = _ENTRY_MESSAGES.get(dst)
    if template is MessageTemplate.CLOSING:
        effects.append(
            _notify(
                state,
                template,
                "contact",
                closes_at=next_deadline(state),
                closes_in=state.policy.closing_closed.words(),
            )
        )
    elif template:
        effects.append(_notify(state, template, "contact"))
    if dst is Status.PENDING_RELEASE:
        assert state.release_id is not None
        effects.append(
            Register(
                key=_key(state, "register"),
                case_number=state.case.case_number,
                release_id=state.release_id,
            )
        )


def _record_change(
    state: CaseState,
    src: Status | None,
    dst: Status,
    actor: Actor,
    note: str | None,
    now: datetime,
    effects: list[Effect],
    due: datetime | None = None,
) -> None:
    state.seq += 1
    entry = HistoryEntry(
        seq=state.seq, from_status=src, to_status=dst, at=now, actor=actor, note=note, due=due
    )
    state.history = [*state.history, entry][-HISTORY_TAIL:]
    late = f" (due {due:%Y-%m-%d %H:%M:%S}; acted late)" if due is not None and due != now else ""
    _remember(state, now, f"{src or 'opened'} → {dst} by {actor.role} {actor.name}{late}")
    effects.append(
        Persist(
            key=_key(state, "persist"),
            case=case_record(state),
            history=HistoryRecord(case_number=state.case.case_number, **entry.model_dump()),
        )
    )


# ---- the state's own lines and the effects' keys ---------------------------------------------


def _step(state: CaseState, now: datetime, line: str) -> None:
    """An accepted event that changes no status: it still takes a sequence number."""
    state.seq += 1
    _remember(state, now, line)


def _remember(state: CaseState, now: datetime, line: str) -> None:
    state.recent = [*state.recent, f"{now:%Y-%m-%d %H:%M:%S} {line}"][-RECENT_TAIL:]


def _key(state: CaseState, what: str) -> str:
    """An effect's idempotency key: the case's workflow id, its opening run, the step, the act."""
    run = f"{state.opened_by_run}:" if state.opened_by_run else ""
    return f"{case_workflow_id(state.case.case_number)}:{run}{state.seq}:{what}"


def _notify(
    state: CaseState, template: MessageTemplate, recipient: Recipient, **facts: Any
) -> Notify:
    base: dict[str, Any] = {
        "title": state.case.title,
        "status": str(state.status),
        "institution": state.case.institution,
        "product": state.case.product,
        "release_id": state.release_id,
        "owner_tier": state.owner_tier,
    }
    for name, value in facts.items():
        base[name] = value.at.isoformat() if isinstance(value, Deadline) else value
    # A second team told of the same step gets a key of its own.
    suffix = f":{recipient}" if recipient == "development" else ""
    return Notify(
        key=_key(state, f"notify:{template}{suffix}"),
        seq=state.seq,
        template=template,
        recipient=recipient,
        contact_email=state.case.contact_email,
        case_number=state.case.case_number,
        facts=base,
    )


def excerpt(text: str, size: int = 200) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
