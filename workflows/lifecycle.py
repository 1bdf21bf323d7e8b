"""The support-case lifecycle as data, and the pure reducer that applies it.

``decide(state, event, now)`` returns the new state and the effects to run, or a
``Rejection`` with its reason. No Temporal here: the workflow shell feeds events in and runs the
effects; tests hit this module directly. The transition table ``TABLE`` is the single source of
truth: validation, the CLI's help and the generated diagram all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from workflows import trust
from workflows.calendar import SHORTEST_SPAN, Span, SpanField
from workflows.contract import (
    Actor,
    ApplyPolicy,
    CaseInput,
    CaseRecord,
    CustomerReply,
    Deadline,
    DeadlineKind,
    DeadlinePolicy,
    Effect,
    HandoffReason,
    HistoryEntry,
    HistoryRecord,
    Instant,
    MessageTemplate,
    Notify,
    Persist,
    PolicyChange,
    PolicyChangeRecord,
    PolicyFieldChange,
    PolicyOverrides,
    PolicySettings,
    Priority,
    Register,
    RejectedEvent,
    ReleaseShipped,
    Role,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
    UndeliveredMessage,
    case_workflow_id,
)

S = Status
R = Role

# How many entries of each tail the state carries; the database keeps the full history.
HISTORY_TAIL = 50
REJECTED_TAIL = 20
RECENT_TAIL = 10
SEEN_EVENT_IDS = 1_000
POLICY_CHANGES_TAIL = 10

# The edition of the rules a case runs under. Edition 2 is the guide read again (who sets
# Pending Work Plan and Pending Release, testing only after the ship, the owner tier after
# Development, late deadlines, the development notice); a case started under edition 1 keeps it
# until its next run, so its recorded history replays unchanged.
EDITION = 2
# A deadline acting within this of its instant is on time: the next stay counts from the
# deadline's own instant, so the guide's chain keeps exact instants. Later (no worker ran), the
# next stay counts from when the case really entered it.
ON_TIME = timedelta(seconds=10)
# Messages the mail server refused for good: the last few, each reason cut to a byte bound, so
# the tail stays under UNDELIVERED_TAIL * (key + template + reason) bytes; the outbox keeps all.
UNDELIVERED_TAIL = 10
UNDELIVERED_REASON_BYTES = 300


class Via(StrEnum):
    """Which event may cause a row of the table."""

    TRANSITION = "transition"
    CUSTOMER_REPLY = "customer_reply"
    TIER_HANDOFF = "tier_handoff"
    DEADLINE = "deadline"


class Rejection(Exception):
    """An event the table refuses; ``reason`` is a short code (metric label), ``message`` says
    what was asked, in which status, and why not."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---- state -----------------------------------------------------------------------------------


class CaseState(BaseModel):
    """Everything the workflow carries, across continue-as-new too. Deadlines are not stored:
    they are derived from (status, status_since, policy, per-stay counters), so they are absolute
    instants by construction and never re-armed."""

    case: CaseInput
    policy: DeadlinePolicy
    status: Status
    status_since: Instant
    owner_tier: int = 1
    opened_at: Instant
    closed_at: Instant | None = None
    seq: int = 0
    # The status the case left to enter the current one
    # (guards Closing -> Pending Customer Testing).
    came_from: Status | None = None
    release_id: str | None = None
    release_shipped_at: Instant | None = None
    reminder_sent: bool = False
    reviews_done: int = 0
    # Edition 2: when the stay's last review acted; the next is the first review instant after
    # it under the current period (a changed period or an outage never piles reviews up).
    last_review_at: Instant | None = None
    comments: int = 0
    edition: int = 1  # carried states from before editions run edition 1
    # The shortest span a policy applied to this case may have (the worker's setting at open).
    shortest_span: SpanField = Field(default=SHORTEST_SPAN, validate_default=True)
    policy_changes: list[PolicyChange] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    rejected: list[RejectedEvent] = Field(default_factory=list)
    recent: list[str] = Field(default_factory=list)  # one line per accepted event, for the UI
    seen_event_ids: list[str] = Field(default_factory=list)
    undelivered: list[UndeliveredMessage] = Field(default_factory=list)
    # The chain's first run, set when a run opens the case: its effect keys carry it, so runs of
    # a reused number never share a key (None in states carried from before: today's keys).
    opened_by_run: str | None = None


class CarriedState(BaseModel):
    """The input of a continued run: the state and the effects not yet done, not the history.

    Defined here, in a module the worker's sandbox passes through, rather than beside the
    workflow: a pydantic model class built anew in every workflow run's sandbox was most of the
    cost of starting (or replaying) a case and of each cached case's memory."""

    carried: CaseState
    effects: list[Effect] = Field(default_factory=list)


@dataclass(frozen=True)
class Due:
    """A deadline that fell due: the shell's timer, fed back as an event."""

    deadline: Deadline


Event = CustomerReply | TierHandoff | TransitionRequest | ReleaseShipped | ApplyPolicy | Due


@dataclass(frozen=True)
class Decision:
    state: CaseState
    effects: list[Effect]


# ---- the table -------------------------------------------------------------------------------

Guard = Callable[[CaseState, Status, Status, Actor, TransitionRequest | None], str | None]


def _work_plan_eligible(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if state.case.priority not in (Priority.NORMAL, Priority.LOW):
        return (
            "Pending Work Plan is only for normal or low priority "
            f"(this case is {state.case.priority})"
        )
    if state.case.affects_multiple_institutions:
        return "Pending Work Plan is not used when the issue affects several institutions"
    return None


def _needs_release(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if req is None or not req.release_id:
        return "Pending Release needs a release_id (the release the fix is embedded in)"
    return None


def _owner_analyst_sets_release(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    analyst = _owner_analyst(state)
    if actor.role is not analyst:
        return (
            f"Pending Release is set by the Support analyst that owns the case: {analyst} "
            f"(owner tier is {state.owner_tier})"
        )
    return _needs_release(state, src, dst, actor, req)


def _release_shipped(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if state.release_shipped_at is None:
        return (
            f"release {state.release_id} has not shipped yet; "
            "there is nothing to test before it ships"
        )
    return None


def _came_from_pending_release(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if state.came_from is not S.PENDING_RELEASE:
        return (
            "only a case that came to Closing from Pending Release "
            "can go to Pending Customer Testing"
        )
    return None


def _back_to_owner(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    owner = S.TIER1_ANALYSIS if state.owner_tier == 1 else S.TIER2_ANALYSIS
    if dst is not owner:
        return f"the case goes back to its owner tier: {owner} (owner tier is {state.owner_tier})"
    allowed = {R.TIER1 if state.owner_tier == 1 else R.TIER2}
    if src is S.WAITING_FOR_VENDOR_INPUT:
        allowed.add(R.KB_TEAM)
    if actor.role not in allowed:
        names = " or ".join(sorted(allowed))
        return f"only {names} may take the case back (owner tier is {state.owner_tier})"
    return None


@dataclass(frozen=True)
class Rule:
    sources: frozenset[Status]
    targets: frozenset[Status]
    roles: frozenset[Role]
    via: Via = Via.TRANSITION
    note: str = ""
    guard: Guard | None = None
    deadline: DeadlineKind | None = None
    who: str = ""  # who may, in words, where the roles alone do not say it
    editions: frozenset[int] = frozenset({1, EDITION})  # the rule editions that have this row

    def in_edition(self, edition: int) -> bool:
        return edition in self.editions


def _rule(
    sources: Iterable[Status],
    targets: Iterable[Status],
    roles: Iterable[Role],
    editions: Iterable[int] = (1, EDITION),
    **kw: Any,
) -> Rule:
    return Rule(
        frozenset(sources),
        frozenset(targets),
        frozenset(roles),
        editions=frozenset(editions),
        **kw,
    )


def _timer(source: Status, target: Status, kind: DeadlineKind) -> Rule:
    return _rule([source], [target], [R.SYSTEM], via=Via.DEADLINE, deadline=kind)


RESOLVERS = (R.TIER1, R.TIER2, R.DEVELOPMENT, R.PRODUCT_MANAGER, R.KB_TEAM)
OPENERS = frozenset({R.CUSTOMER, R.TIER1})
POLICY_ROLES = frozenset({R.TIER1, R.TIER2})

TABLE: tuple[Rule, ...] = (
    _rule([S.NEW, S.TIER2_CLOSED], [S.TIER1_ANALYSIS], [R.TIER1]),
    _rule(
        [S.WAITING_FOR_PROCESS, S.WAITING_FOR_VENDOR_INPUT],
        [S.TIER1_ANALYSIS, S.TIER2_ANALYSIS],
        [R.TIER1, R.TIER2, R.KB_TEAM],
        note="back to the owner tier (kb_team too, from vendor input)",
        guard=_back_to_owner,
    ),
    _rule(
        [S.TIER1_ANALYSIS, S.TIER2_ANALYSIS],
        [S.PENDING_CUSTOMER_RESPONSE],
        [R.TIER1, R.TIER2],
        note="starts the 2/4/6-week clock",
    ),
    _rule(
        [S.PENDING_CUSTOMER_RESPONSE, S.CLOSING, S.PENDING_CUSTOMER_TESTING],
        [S.WAITING_FOR_PROCESS],
        [R.CUSTOMER],
        via=Via.CUSTOMER_REPLY,
        note=(
            "a customer reply; from Closing it reopens the case, from testing the fix did not work"
        ),
    ),
    _rule(
        [S.TIER1_ANALYSIS],
        [S.TIER2_NEW],
        [R.TIER1],
        via=Via.TIER_HANDOFF,
        note="handoff; reason consult, deeper_analysis or defect_verification",
    ),
    _rule([S.TIER2_NEW, S.TIER1_ANSWER_TO_TIER2], [S.TIER2_ANALYSIS], [R.TIER2]),
    _rule([S.TIER2_ANALYSIS], [S.TIER2_W4I], [R.TIER2]),
    _rule([S.TIER2_W4I], [S.TIER1_ANSWER_TO_TIER2], [R.TIER1]),
    _rule(
        [S.TIER2_ANALYSIS],
        [S.TIER2_CLOSED],
        [R.TIER2],
        via=Via.TIER_HANDOFF,
        note="handoff back to Tier 1",
    ),
    _rule(
        [S.DEVELOPMENT],
        [S.PENDING_WORK_PLAN],
        [R.DEVELOPMENT],
        note="Development decides; normal or low priority, one institution",
        guard=_work_plan_eligible,
        editions=[EDITION],
    ),
    _rule(
        [S.TIER2_ANALYSIS, S.DEVELOPMENT],
        [S.PENDING_WORK_PLAN],
        [R.TIER2, R.DEVELOPMENT],
        note="normal or low priority, one institution",
        guard=_work_plan_eligible,
        editions=[1],
    ),
    _rule(
        [S.TIER2_ANALYSIS, S.PENDING_WORK_PLAN, S.PRODUCT_MANAGER_REVIEW],
        [S.DEVELOPMENT],
        [R.TIER2, R.DEVELOPMENT, R.PRODUCT_MANAGER],
    ),
    _rule(
        [S.DEVELOPMENT],
        [S.PENDING_RELEASE],
        [R.TIER1, R.TIER2],
        note="the Support analyst that owns the case; needs release_id",
        who="the Support analyst that owns the case (tier2 when the owner tier is 2, else tier1)",
        guard=_owner_analyst_sets_release,
        editions=[EDITION],
    ),
    _rule(
        [S.DEVELOPMENT],
        [S.PENDING_RELEASE],
        [R.DEVELOPMENT],
        note="needs release_id",
        guard=_needs_release,
        editions=[1],
    ),
    _rule(
        [S.DEVELOPMENT],
        [S.TIER2_ANALYSIS],
        [R.DEVELOPMENT],
        note="not a defect; Tier 2 becomes the owner tier",
    ),
    _rule(
        [S.PENDING_RELEASE],
        [S.PENDING_CUSTOMER_TESTING],
        [R.CUSTOMER],
        note="the customer is not ready to close; only once the release shipped",
        guard=_release_shipped,
        editions=[EDITION],
    ),
    _rule(
        [S.PENDING_RELEASE],
        [S.PENDING_CUSTOMER_TESTING],
        [R.CUSTOMER],
        note="the customer is not ready to close",
        editions=[1],
    ),
    _rule(
        [S.CLOSING],
        [S.PENDING_CUSTOMER_TESTING],
        [R.CUSTOMER],
        note="only when Closing came from Pending Release",
        guard=_came_from_pending_release,
    ),
    _rule(
        [S.TIER1_ANALYSIS, S.TIER2_ANALYSIS],
        [S.SHARED_WITH_PQ, S.PRODUCT_MANAGER_REVIEW],
        [R.TIER1, R.TIER2],
    ),
    _rule(
        [S.TIER1_ANALYSIS, S.TIER2_ANALYSIS],
        [S.WAITING_FOR_VENDOR_INPUT],
        [R.TIER1, R.TIER2, R.KB_TEAM],
    ),
    _rule(
        [
            S.TIER1_ANALYSIS,
            S.TIER2_ANALYSIS,
            S.TIER2_CLOSED,
            S.WAITING_FOR_PROCESS,
            S.DEVELOPMENT,
            S.PRODUCT_MANAGER_REVIEW,
            S.WAITING_FOR_VENDOR_INPUT,
            S.SHARED_WITH_PQ,
        ],
        [S.CLOSING],
        RESOLVERS,
        note="Support has answered (resolve)",
    ),
    _rule(
        [S.PENDING_CUSTOMER_TESTING],
        [S.CLOSING],
        [R.CUSTOMER, R.TIER1, R.TIER2],
        note="the customer confirms the fix",
    ),
    _rule([S.CLOSING], [S.CLOSED], [R.CUSTOMER], note="the customer confirms"),
    # Timer rows: only the workflow's own clock (role system) takes these.
    _timer(S.PENDING_CUSTOMER_RESPONSE, S.CLOSING, DeadlineKind.PCR_CLOSING),
    _timer(S.CLOSING, S.CLOSED, DeadlineKind.CLOSING_CLOSED),
    _timer(S.PENDING_WORK_PLAN, S.CLOSING, DeadlineKind.WORK_PLAN_EXPIRY),
    _timer(S.PENDING_RELEASE, S.CLOSING, DeadlineKind.RELEASE_CLOSING),
    _timer(S.PENDING_CUSTOMER_TESTING, S.CLOSED, DeadlineKind.TESTING_CLOSED),
)

SYSTEM = Actor(role=R.SYSTEM, name="lifecycle")


def rules(edition: int = EDITION) -> list[Rule]:
    """The table as a case of this edition reads it (the diagram and the CLI read the latest)."""
    return [r for r in TABLE if r.in_edition(edition)]


def rules_from(status: Status, via: Via | None = None, edition: int = EDITION) -> list[Rule]:
    return [r for r in rules(edition) if status in r.sources and (via is None or r.via is via)]


def targets(via: Via = Via.TRANSITION) -> list[Status]:
    """Statuses reachable by an event of this kind, in the guide's order (the CLI's choices)."""
    reachable = {t for r in rules() if r.via is via for t in r.targets}
    return [s for s in Status if s in reachable]


def _owner_analyst(state: CaseState) -> Role:
    return R.TIER1 if state.owner_tier == 1 else R.TIER2


# ---- deadlines -------------------------------------------------------------------------------


def pending_deadlines(state: CaseState) -> list[Deadline]:
    """The deadlines of the current stay that have not acted yet, soonest first."""
    p, since, out = state.policy, state.status_since, []
    match state.status:
        case S.PENDING_CUSTOMER_RESPONSE:
            if not state.reminder_sent:
                out.append(
                    Deadline(at=p.pcr_reminder.after(since), action=DeadlineKind.PCR_REMINDER)
                )
            out.append(
                Deadline(
                    at=p.pcr_closing.after(since), action=DeadlineKind.PCR_CLOSING, to=S.CLOSING
                )
            )
        case S.CLOSING:
            out.append(
                Deadline(
                    at=p.closing_closed.after(since),
                    action=DeadlineKind.CLOSING_CLOSED,
                    to=S.CLOSED,
                )
            )
        case S.PENDING_WORK_PLAN:
            expiry = p.work_plan_expiry.after(since)
            review = p.work_plan_review.after(since, _next_review_number(state))
            if review < expiry:
                out.append(Deadline(at=review, action=DeadlineKind.WORK_PLAN_REVIEW))
            out.append(Deadline(at=expiry, action=DeadlineKind.WORK_PLAN_EXPIRY, to=S.CLOSING))
        case S.PENDING_RELEASE if state.release_shipped_at is not None:
            # The clock counts from the later of shipping and entering the status, so a case
            # that enters after its release shipped starts its 14 days at once.
            start = max(state.release_shipped_at, since)
            out.append(
                Deadline(
                    at=p.release_closing.after(start),
                    action=DeadlineKind.RELEASE_CLOSING,
                    to=S.CLOSING,
                )
            )
        case S.PENDING_CUSTOMER_TESTING:
            out.append(
                Deadline(
                    at=p.testing_closed.after(since),
                    action=DeadlineKind.TESTING_CLOSED,
                    to=S.CLOSED,
                )
            )
    return sorted(out, key=lambda d: d.at)  # stable: a reminder due with its closing goes first


def next_deadline(state: CaseState) -> Deadline | None:
    pending = pending_deadlines(state)
    return pending[0] if pending else None


def timeline(state: CaseState, limit: int = 32) -> list[Deadline]:
    """What happens if nobody acts: each deadline in turn, applied through ``decide`` itself."""
    out: list[Deadline] = []
    while len(out) < limit and (due := next_deadline(state)) is not None:
        out.append(due)
        try:
            state = decide(state, Due(due), due.at).state
        except Exception:  # a view: what the core cannot foresee ends it; a case always answers
            break
    return out


# ---- the reducer -----------------------------------------------------------------------------


def open_case(
    case: CaseInput,
    now: datetime,
    edition: int = EDITION,
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
    if edition >= 2 and case.policy is not None and case.opened_by.role is R.CUSTOMER:
        # Deadlines are the organisation's promise: a customer opens with the defaults.
        case = case.model_copy(update={"policy": None})
        note = "case opened (a customer's deadline policy is not used: the defaults apply)"
    state = CaseState(
        # The proof is checked; it is not carried for the case's life.
        case=case.model_copy(update={"proof": None}) if case.proof else case,
        policy=_with_fields(DeadlinePolicy(), case.policy),
        status=S.NEW,
        status_since=now,
        opened_at=now,
        edition=edition,
        opened_by_run=opened_by_run,
    )
    effects: list[Effect] = []
    _record_change(state, None, S.NEW, case.opened_by, note, now, effects)
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
    fields = ", ".join(f"{c.field} {c.old} → {c.new}" for c in changes)
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


def decide(
    state: CaseState, event: Event, now: datetime, senders: trust.TrustedSenders | None = None
) -> Decision:
    """Apply one event at instant ``now``. Raises ``Rejection``; never mutates ``state``.
    With ``senders`` (trusted senders configured) an event's actor must come with a proof."""
    _check_proof(senders, event, state.case.case_number, now)
    if state.status is S.CLOSED:
        raise Rejection(
            "closed",
            f"case {state.case.case_number} is closed; open a new case referencing it",
        )
    # Shallow is enough: every change below assigns a field, never mutates a shared list or model
    # (a deep copy of the history tail made each event cost milliseconds).
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
            dst = S.TIER2_NEW if event.to_tier == 2 else S.TIER2_CLOSED
            _check_move(state, dst, event.actor, Via.TIER_HANDOFF, None)
            note = f"{event.reason}: {event.note}" if event.note else event.reason
            _enter(state, dst, event.actor, note, now, effects)
        case TransitionRequest():
            _check_actor(state, event.actor)
            _check_move(state, event.to, event.actor, Via.TRANSITION, event)
            if event.to is S.PENDING_RELEASE:
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


def is_duplicate(state: CaseState, event_id: str | None) -> bool:
    return event_id is not None and event_id in state.seen_event_ids


def record_rejection(state: CaseState, rejected: RejectedEvent) -> CaseState:
    state = state.model_copy()
    state.rejected = [*state.rejected, rejected][-REJECTED_TAIL:]
    return state


def record_undelivered(state: CaseState, refused: Iterable[UndeliveredMessage]) -> CaseState:
    """Keep the messages the mail server refused for good in a bounded tail (once per key)."""
    known = {u.key for u in state.undelivered}
    new = [
        UndeliveredMessage(
            key=u.key[:200], template=u.template[:40], reason=_bounded_reason(u.reason)
        )
        for u in refused
        if u.key not in known
    ]
    if not new:
        return state
    state = state.model_copy()
    state.undelivered = [*state.undelivered, *new][-UNDELIVERED_TAIL:]
    return state


def _bounded_reason(reason: str) -> str:
    # A mail server's answer is outside text: printable characters only, at most so many bytes,
    # cut on a character boundary.
    text = " ".join("".join(c if c.isprintable() else " " for c in reason).split())
    data = text.encode("utf-8")
    if len(data) <= UNDELIVERED_REASON_BYTES:
        return text
    return data[: UNDELIVERED_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "…"


def describe_rejection(state: CaseState, asked: str, rejection: Rejection) -> str:
    """The one-line error an update answers with: current status, what was asked, and why not."""
    return (
        f"case {state.case.case_number} is in {state.status!s}; "
        f"{asked} rejected: {rejection.message}"
    )


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
    if actor.role is R.SYSTEM:
        raise Rejection(
            "forged_system",
            "the system role is the workflow's own; it is never accepted from outside",
        )
    _check_institution(state.case, actor)


def _check_institution(case: CaseInput, actor: Actor) -> None:
    if actor.role is R.CUSTOMER and actor.institution != case.institution:
        raise Rejection(
            "wrong_institution",
            f"a customer of {actor.institution or 'no institution'} "
            f"cannot act on a case of another institution ({case.institution})",
        )


def _check_move(
    state: CaseState, dst: Status, actor: Actor, via: Via, req: TransitionRequest | None
) -> None:
    src = state.status
    asked = f"{src} -> {dst}"
    rows = [r for r in rules(state.edition) if src in r.sources and dst in r.targets]
    if not rows:
        allowed = sorted(
            {
                t
                for r in rules_from(src, edition=state.edition)
                if r.via is not Via.DEADLINE
                for t in r.targets
            }
        )
        hint = f"; from {src} a case can go to: {', '.join(allowed)}" if allowed else ""
        raise Rejection("not_allowed", f"{asked} is not a transition of the lifecycle{hint}")
    by_via = [r for r in rows if r.via is via]
    if not by_via:
        other = rows[0].via
        how = {
            Via.CUSTOMER_REPLY: "it happens by a customer reply (customer_reply)",
            Via.TIER_HANDOFF: "it is a tier handoff (tier_handoff with a reason)",
            Via.DEADLINE: "only the case's own deadline does that",
            Via.TRANSITION: "it is a transition request (transition)",
        }[other]
        raise Rejection("wrong_event", f"{asked} is not made by {via}: {how}")
    by_role = [r for r in by_via if actor.role in r.roles]
    if not by_role:
        roles = ", ".join(sorted({str(x) for r in by_via for x in r.roles}))
        who = "; ".join(r.who for r in by_via if r.who)
        raise Rejection(
            "wrong_role",
            f"{asked} is not for {actor.role}; it is for {who or roles}",
        )
    reasons = [
        reason for r in by_role if r.guard and (reason := r.guard(state, src, dst, actor, req))
    ]
    if len(reasons) == len(by_role):
        raise Rejection("guard", f"{asked} refused: {reasons[0]}")


def _set_release(state: CaseState, release_id: str | None) -> None:
    # De-duplicate release_shipped by release id: re-entering for the same (shipped) release keeps
    # its ship instant; another release starts unshipped.
    if release_id != state.release_id:
        state.release_shipped_at = None
    state.release_id = release_id


def _on_reply(state: CaseState, reply: CustomerReply, now: datetime, effects: list[Effect]) -> None:
    if reply.actor.role is not R.CUSTOMER:
        raise Rejection(
            "wrong_role", f"customer_reply comes from the customer, not {reply.actor.role}"
        )
    state.comments += 1
    if rules_from(state.status, Via.CUSTOMER_REPLY, state.edition):
        _enter(state, S.WAITING_FOR_PROCESS, reply.actor, _excerpt(reply.text), now, effects)
    else:
        # No reply transition here: the reply is kept as a comment and the owner tier told.
        state.seq += 1
        _remember(state, now, f"comment from {reply.actor.name} (kept; status unchanged)")
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
    state.seq += 1
    _remember(state, now, f"release {event.release_id} shipped")
    if state.status is S.PENDING_RELEASE:
        effects.append(_notify(state, MessageTemplate.RELEASE_SHIPPED, "contact"))


def _on_deadline(
    state: CaseState, deadline: Deadline, now: datetime, effects: list[Effect]
) -> None:
    current = next_deadline(state)
    if current is None or current != deadline or now < deadline.at:
        raise Rejection("not_due", f"{deadline.action} is not due in {state.status}")
    late = state.edition >= 2 and now - deadline.at > ON_TIME
    overtaken = state.edition >= 2 and deadline.to is None and _a_late_move(state, now)
    # On time, a deadline acts at its own instant, so the chain keeps the guide's instants; late
    # (no worker ran), the next stay counts from now and is never shortened by the outage.
    now = now if late else deadline.at
    if overtaken:
        # The move that is due too says it all (a Closing notice, the end of the work plan).
        if deadline.action is DeadlineKind.PCR_REMINDER:
            state.reminder_sent = True
        else:
            _review_done(state, now)
        state.seq += 1
        _remember(state, now, f"{describe(deadline)} not sent: a move is due at the same time")
        return
    match deadline.action:
        case DeadlineKind.PCR_REMINDER:
            state.reminder_sent = True
            state.seq += 1
            _remember(state, now, "reminder sent to the customer")
            effects.append(
                _notify(state, MessageTemplate.REMINDER, "contact", closes_at=next_deadline(state))
            )
        case DeadlineKind.WORK_PLAN_REVIEW:
            _review_done(state, now)
            state.seq += 1
            _remember(state, now, f"work-plan reassessment #{state.reviews_done}")
            teams: list[Literal["support", "development"]] = ["support"]
            if state.edition >= 2:
                teams.append("development")  # "reassessed by Support and Development"
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
            assert deadline.to is not None
            rows = [
                r
                for r in rules_from(state.status, Via.DEADLINE, state.edition)
                if r.deadline is deadline.action
            ]
            assert rows and deadline.to in rows[0].targets, f"no timer row for {deadline.action}"
            due = deadline.at if state.edition >= 2 else None
            _enter(state, deadline.to, SYSTEM, f"deadline {deadline.action}", now, effects, due)


def _next_review_number(state: CaseState) -> int:
    """Which review (counted from entry) comes next. Edition 2 counts from the last one that
    acted under today's period, so every review already due acts as one."""
    if state.edition < 2 or state.last_review_at is None:
        return state.reviews_done + 1
    return state.policy.work_plan_review.times_within(state.status_since, state.last_review_at) + 1


def _review_done(state: CaseState, now: datetime) -> None:
    state.reviews_done += 1
    if state.edition >= 2:
        state.last_review_at = now


def _a_late_move(state: CaseState, now: datetime) -> bool:
    """A move of this stay is due and late: it acts now too, and its notice says it all. (Within
    ON_TIME everything acts as at its instant, where the reminder came first.)"""
    return any(d.to is not None and now - d.at > ON_TIME for d in pending_deadlines(state))


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
    if dst is S.TIER2_NEW:
        state.owner_tier = 2
    elif dst is S.TIER2_CLOSED:
        state.owner_tier = 1
    elif state.edition >= 2 and src is S.DEVELOPMENT and dst is S.TIER2_ANALYSIS:
        state.owner_tier = 2  # not a defect: back to Tier 2, which now owns the analysis
    if dst is S.CLOSED:
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
    if dst is S.PENDING_RELEASE:
        assert state.release_id is not None
        effects.append(
            Register(
                key=_key(state, "register"),
                case_number=state.case.case_number,
                release_id=state.release_id,
            )
        )


_ENTRY_MESSAGES = {
    S.PENDING_CUSTOMER_RESPONSE: MessageTemplate.INFORMATION_REQUESTED,
    S.PENDING_RELEASE: MessageTemplate.PENDING_RELEASE,
    S.CLOSING: MessageTemplate.CLOSING,
    S.CLOSED: MessageTemplate.CLOSED,
}


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


def _remember(state: CaseState, now: datetime, line: str) -> None:
    state.recent = [*state.recent, f"{now:%Y-%m-%d %H:%M:%S} {line}"][-RECENT_TAIL:]


def _key(state: CaseState, what: str) -> str:
    run = f"{state.opened_by_run}:" if state.opened_by_run else ""
    return f"case-{state.case.case_number}:{run}{state.seq}:{what}"


def _notify(
    state: CaseState,
    template: MessageTemplate,
    recipient: Literal["contact", "support", "development"],
    **facts: Any,
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
        template=template,
        recipient=recipient,
        contact_email=state.case.contact_email,
        case_number=state.case.case_number,
        facts=base,
    )


def _excerpt(text: str, size: int = 200) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


# ---- projections -----------------------------------------------------------------------------


def case_record(state: CaseState) -> CaseRecord:
    c = state.case
    return CaseRecord(
        case_number=c.case_number,
        institution=c.institution,
        product=c.product,
        priority=c.priority,
        title=c.title,
        contact_email=c.contact_email,
        status=state.status,
        status_since=state.status_since,
        owner_tier=state.owner_tier,
        release_id=state.release_id,
        opened_at=state.opened_at,
        closed_at=state.closed_at,
        references=c.references,
        seq=state.seq,
    )


def snapshot(state: CaseState) -> Snapshot:
    c = state.case
    return Snapshot(
        case_number=c.case_number,
        status=state.status,
        status_since=state.status_since,
        owner_tier=state.owner_tier,
        priority=c.priority,
        institution=c.institution,
        product=c.product,
        title=c.title,
        release_id=state.release_id,
        release_shipped_at=state.release_shipped_at,
        next_deadline=next_deadline(state),
        timeline=timeline(state),
        history=state.history,
        rejected=state.rejected,
        policy=state.policy,
        opened_at=state.opened_at,
        closed_at=state.closed_at,
        references=c.references,
        policy_changes=state.policy_changes,
        undelivered=state.undelivered,
    )


def details_markdown(state: CaseState) -> str:
    """The case as the Temporal UI's "current details" shows it."""
    due = next_deadline(state)
    lines = [
        f"**{state.status}** since {state.status_since:%Y-%m-%d %H:%M:%S} UTC"
        f" · owner Tier {state.owner_tier}",
        "",
        f"- next deadline: {due.at:%Y-%m-%d %H:%M:%S} UTC — {describe(due)}"
        if due
        else "- next deadline: none (waiting for people)",
    ]
    if state.release_id:
        shipped = (
            f"shipped {state.release_shipped_at:%Y-%m-%d}"
            if state.release_shipped_at
            else "not shipped"
        )
        lines.append(f"- release: {state.release_id} ({shipped})")
    if state.rejected:
        last = state.rejected[-1]
        lines.append(
            f"- rejected events: {len(state.rejected)} "
            f"(last: {last.reason}: {_excerpt(last.message, 120)})"
        )
    if state.undelivered:
        last_refused = state.undelivered[-1]
        lines.append(
            f"- undelivered email: {len(state.undelivered)} "
            f"(last: {last_refused.template}: {_excerpt(last_refused.reason, 120)})"
        )
    lines += ["", "**Last events**", "", *[f"- {line}" for line in reversed(state.recent[-5:])]]
    return "\n".join(lines)


def describe(deadline: Deadline) -> str:
    return {
        DeadlineKind.PCR_REMINDER: "reminder to the customer",
        DeadlineKind.WORK_PLAN_REVIEW: "work-plan reassessment",
    }.get(deadline.action, f"→ {deadline.to}")


HANDOFF_REASONS = [str(r) for r in HandoffReason]
