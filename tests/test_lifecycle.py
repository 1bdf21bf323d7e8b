"""The lifecycle core, scenario by scenario from the vendor's guide.

Pure tests: they hit ``workflows.lifecycle`` directly (no Temporal), so the whole table, the
deadlines at their real default durations and thousands of random event sequences run in a few
seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from workflows.calendar import Span, SpanError, add_months
from workflows.contract import (
    Actor,
    CaseInput,
    CustomerReply,
    Deadline,
    DeadlineKind,
    DeadlinePolicy,
    HandoffReason,
    MessageTemplate,
    Notify,
    Persist,
    Priority,
    Register,
    ReleaseShipped,
    Role,
    Status,
    TierHandoff,
    TransitionRequest,
)
from workflows.lifecycle import (
    HISTORY_TAIL,
    ON_TIME,
    RECENT_TAIL,
    TABLE,
    CaseState,
    Decision,
    Due,
    Event,
    Rejection,
    Rule,
    Via,
    decide,
    describe_rejection,
    details_markdown,
    next_deadline,
    open_case,
    pending_deadlines,
    rules,
    rules_from,
    snapshot,
    targets,
    timeline,
)

S, R, K = Status, Role, DeadlineKind

T0 = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)  # a month end, on purpose
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
INSTITUTION = "University of Example"
OTHER_INSTITUTION = "Other College"
RELEASE = "2026.12"
OTHER_RELEASE = "2027.03"

# Statuses where the spec's deadline table has a deadline (Pending Release only once shipped).
DEADLINE_STATUSES = {
    S.PENDING_CUSTOMER_RESPONSE,
    S.CLOSING,
    S.PENDING_WORK_PLAN,
    S.PENDING_RELEASE,
    S.PENDING_CUSTOMER_TESTING,
}
# Statuses on the Tier 2 side of the case, where the owner tier is naturally 2.
TIER2_SIDE = {
    S.TIER2_NEW,
    S.TIER2_ANALYSIS,
    S.TIER2_W4I,
    S.TIER1_ANSWER_TO_TIER2,
    S.PENDING_WORK_PLAN,
    S.DEVELOPMENT,
    S.PENDING_RELEASE,
    S.PENDING_CUSTOMER_TESTING,
}
REASONS = {
    "not_allowed",
    "wrong_role",
    "wrong_institution",
    "forged_system",
    "wrong_event",
    "guard",
    "closed",
    "not_due",
    "other_release",
}


# ---- builders --------------------------------------------------------------------------------


def make_case(**overrides: Any) -> CaseInput:
    fields: dict[str, Any] = {
        "case_number": "00123",
        "institution": INSTITUTION,
        "product": "Alma",
        "priority": Priority.NORMAL,
        "title": "Loans fail at checkout",
        "contact_email": "librarian@example.edu",
        "opened_by": who(R.CUSTOMER),
    }
    fields.update(overrides)
    return CaseInput(**fields)


def who(role: Role, institution: str | None = None) -> Actor:
    if role is R.CUSTOMER and institution is None:
        institution = INSTITUTION
    return Actor(role=role, name=f"{role} person", institution=institution)


def in_status(
    status: Status, *, since: datetime = T0, case: CaseInput | None = None, **fields: Any
) -> CaseState:
    """A case sitting in ``status`` since ``since``, built directly (no history needed)."""
    return CaseState(
        case=case or make_case(),
        policy=DeadlinePolicy(),
        status=status,
        status_since=since,
        opened_at=since - 30 * DAY,
        **fields,
    )


def move(to: Status, role: Role, **kw: Any) -> TransitionRequest:
    return TransitionRequest(to=to, actor=kw.pop("actor", None) or who(role), **kw)


def reply(role: Role = R.CUSTOMER, institution: str | None = None) -> CustomerReply:
    return CustomerReply(text="Here are the logs you asked for.", actor=who(role, institution))


def handoff(to_tier: int, role: Role, reason: str | None = None) -> TierHandoff:
    reason = reason or ("deeper_analysis" if to_tier == 2 else "answered: a configuration issue")
    return TierHandoff(to_tier=to_tier, reason=reason, note="see logs", actor=who(role))


def rejection(state: CaseState, event: Event, now: datetime) -> Rejection:
    before = state.model_copy()
    with pytest.raises(Rejection) as caught:
        decide(state, event, now)
    assert state == before, "a rejected event must leave the state untouched"
    return caught.value


def fire(state: CaseState, lateness: timedelta = timedelta(0)) -> tuple[Decision, Deadline]:
    """Let the next deadline fall due (at its instant, or ``lateness`` after it)."""
    due = next_deadline(state)
    assert due is not None, f"no deadline ahead in {state.status}"
    return decide(state, Due(due), due.at + lateness), due


def notices(decision: Decision) -> list[Notify]:
    return [e for e in decision.effects if isinstance(e, Notify)]


def persists(decision: Decision) -> list[Persist]:
    return [e for e in decision.effects if isinstance(e, Persist)]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---- every row of the table is accepted ------------------------------------------------------


def _setup(rule: Rule, src: Status, dst: Status, role: Role) -> dict[str, Any] | None:
    """The fields a case in ``src`` needs so that ``role`` may move it to ``dst`` by ``rule``;
    None when no case allows it (the owner-tier guard refuses that role)."""
    fields: dict[str, Any] = {"owner_tier": 2 if src in TIER2_SIDE else 1}
    if src in (S.WAITING_FOR_PROCESS, S.WAITING_FOR_VENDOR_INPUT) and dst in (
        S.TIER1_ANALYSIS,
        S.TIER2_ANALYSIS,
    ):
        # Back to the owner tier: the tier of the owner (kb_team too, from vendor input).
        tier = 1 if dst is S.TIER1_ANALYSIS else 2
        allowed = {R.TIER1 if tier == 1 else R.TIER2}
        if src is S.WAITING_FOR_VENDOR_INPUT:
            allowed.add(R.KB_TEAM)
        if role not in allowed:
            return None
        fields["owner_tier"] = tier
    if src is S.DEVELOPMENT and dst is S.PENDING_RELEASE:
        # The Support analyst that owns the case: tier1 owns at tier 1, tier2 at tier 2.
        fields["owner_tier"] = 1 if role is R.TIER1 else 2
    if src is S.CLOSING and dst is S.PENDING_CUSTOMER_TESTING:
        fields["came_from"] = S.PENDING_RELEASE
    if src is S.PENDING_RELEASE:
        fields["release_id"] = RELEASE
        fields["release_shipped_at"] = T0 - DAY  # testing needs a shipped release
    if rule.via is Via.DEADLINE:
        # Past the deadlines that act in place, so the status-changing one is next.
        if src is S.PENDING_CUSTOMER_RESPONSE:
            fields["reminder_sent"] = True
        if src is S.PENDING_WORK_PLAN:
            fields["reviews_done"] = 7  # reviews at 3, 6, ... 21 months; none at 24
        if src is S.PENDING_RELEASE:
            fields["release_shipped_at"] = T0 - DAY
    return fields


def _combinations() -> tuple[list[Any], list[Any]]:
    accepted: list[Any] = []
    refused: list[Any] = []
    for rule in rules():
        for src in (s for s in Status if s in rule.sources):
            for dst in (s for s in Status if s in rule.targets):
                for role in (r for r in Role if r in rule.roles):
                    name = f"{src} -> {dst} by {role} ({rule.via})"
                    fields = _setup(rule, src, dst, role)
                    bucket = refused if fields is None else accepted
                    bucket.append(pytest.param(rule, src, dst, role, fields, id=name))
    return accepted, refused


ACCEPTED, REFUSED_BY_OWNER_TIER = _combinations()


def _event_for(rule: Rule, state: CaseState, dst: Status, role: Role) -> tuple[Event, datetime]:
    now = T0 + DAY
    match rule.via:
        case Via.TRANSITION:
            release = RELEASE if dst is S.PENDING_RELEASE else None
            return move(dst, role, release_id=release, note="moving on"), now
        case Via.CUSTOMER_REPLY:
            return reply(role), now
        case Via.TIER_HANDOFF:
            return handoff(2 if dst is S.TIER2_NEW else 1, role), now
        case Via.DEADLINE:
            due = next_deadline(state)
            assert due is not None
            assert (due.action, due.to) == (rule.deadline, dst)
            return Due(due), due.at
    raise AssertionError(rule.via)


def test_the_table_has_every_combination_once():
    ids = [p.id for p in ACCEPTED + REFUSED_BY_OWNER_TIER]
    assert len(ids) == len(set(ids))
    # Every row gives at least one accepted combination.
    assert {id(p.values[0]) for p in ACCEPTED} == {id(r) for r in rules()}


@pytest.mark.parametrize(("rule", "src", "dst", "role", "fields"), ACCEPTED)
def test_every_row_of_the_table_is_accepted(rule, src, dst, role, fields):
    state = in_status(src, **fields)
    event, now = _event_for(rule, state, dst, role)

    decision = decide(state, event, now)

    new = decision.state
    assert new.status == dst
    assert new.came_from == src
    assert new.status_since == now
    assert new.seq == state.seq + 1
    expected_tier = {S.TIER2_NEW: 2, S.TIER2_CLOSED: 1}.get(dst, state.owner_tier)
    if (src, dst) == (S.DEVELOPMENT, S.TIER2_ANALYSIS):
        expected_tier = 2  # not a defect: Tier 2 owns the case again
    assert new.owner_tier == expected_tier
    (persist,) = persists(decision)
    assert persist.history is not None
    assert (persist.history.from_status, persist.history.to_status) == (src, dst)
    assert persist.history.actor.role == role
    assert persist.case.status == dst and persist.case.owner_tier == expected_tier
    assert new.history[-1].to_status == dst
    assert state.status == src, "decide never mutates its input"


@pytest.mark.parametrize(("rule", "src", "dst", "role", "fields"), REFUSED_BY_OWNER_TIER)
@pytest.mark.parametrize("owner_tier", [1, 2])
def test_back_to_the_owner_tier_refuses_other_roles(rule, src, dst, role, fields, owner_tier):
    state = in_status(src, owner_tier=owner_tier)
    refused = rejection(state, move(dst, role), T0 + DAY)
    assert refused.reason == "guard"
    assert "owner tier" in refused.message


def test_entering_tier2_new_and_tier2_closed_sets_the_owner_tier():
    state = in_status(S.TIER1_ANALYSIS)
    assert state.owner_tier == 1
    state = decide(state, handoff(2, R.TIER1, "consult"), T0 + HOUR).state
    assert (state.status, state.owner_tier) == (S.TIER2_NEW, 2)
    state = decide(state, move(S.TIER2_ANALYSIS, R.TIER2), T0 + 2 * HOUR).state
    state = decide(state, handoff(1, R.TIER2), T0 + 3 * HOUR).state
    assert (state.status, state.owner_tier) == (S.TIER2_CLOSED, 1)
    assert state.history[-1].note == "answered: a configuration issue: see logs"


def test_targets_lists_the_statuses_each_event_kind_reaches():
    assert targets(Via.TIER_HANDOFF) == [S.TIER2_NEW, S.TIER2_CLOSED]
    assert targets(Via.CUSTOMER_REPLY) == [S.WAITING_FOR_PROCESS]
    assert S.NEW not in targets() and S.DEVELOPMENT in targets()


# ---- forbidden moves -------------------------------------------------------------------------

HIGH = make_case(priority=Priority.HIGH)
CRITICAL = make_case(priority=Priority.CRITICAL)
SEVERAL = make_case(affects_multiple_institutions=True)

FORBIDDEN = [
    # (state, event, reason, words the message must contain)
    pytest.param(
        in_status(S.NEW),
        move(S.DEVELOPMENT, R.TIER1),
        "not_allowed",
        ["New -> Development", "can go to: Tier 1 Analysis"],
        id="not_allowed: New -> Development",
    ),
    pytest.param(
        in_status(S.TIER2_ANALYSIS, owner_tier=2),
        handoff(2, R.TIER2),
        "not_allowed",
        ["Tier 2 Analysis -> Tier 2 New"],
        id="not_allowed: handoff to Tier 2 from Tier 2 Analysis",
    ),
    pytest.param(
        in_status(S.TIER1_ANALYSIS),
        handoff(1, R.TIER1),
        "not_allowed",
        ["Tier 1 Analysis -> Tier 2 Closed"],
        id="not_allowed: handoff to Tier 1 from Tier 1 Analysis",
    ),
    pytest.param(
        in_status(S.CLOSING),
        move(S.CLOSING, R.TIER1),
        "not_allowed",
        ["Closing -> Closing"],
        id="not_allowed: to the same status",
    ),
    pytest.param(
        in_status(S.NEW),
        move(S.TIER1_ANALYSIS, R.CUSTOMER),
        "wrong_role",
        ["not for customer", "tier1"],
        id="wrong_role: customer takes a new case",
    ),
    pytest.param(
        in_status(S.TIER2_ANALYSIS, owner_tier=2),
        move(S.TIER2_W4I, R.TIER1),
        "wrong_role",
        ["not for tier1", "tier2"],
        id="wrong_role: tier1 asks itself for information",
    ),
    pytest.param(
        in_status(S.CLOSING),
        move(S.CLOSED, R.TIER1),
        "wrong_role",
        ["it is for customer"],
        id="wrong_role: support closes a Closing case early",
    ),
    pytest.param(
        in_status(S.PENDING_RELEASE, release_id=RELEASE),
        move(S.PENDING_CUSTOMER_TESTING, R.DEVELOPMENT),
        "wrong_role",
        ["customer"],
        id="wrong_role: development asks for customer testing",
    ),
    pytest.param(
        in_status(S.TIER1_ANALYSIS),
        handoff(2, R.TIER2),
        "wrong_role",
        ["tier1"],
        id="wrong_role: tier2 hands off to itself",
    ),
    pytest.param(
        in_status(S.PENDING_CUSTOMER_RESPONSE),
        reply(R.TIER1),
        "wrong_role",
        ["customer_reply comes from the customer"],
        id="wrong_role: staff sends a customer reply",
    ),
    pytest.param(
        in_status(S.PENDING_CUSTOMER_RESPONSE),
        reply(institution=OTHER_INSTITUTION),
        "wrong_institution",
        [OTHER_INSTITUTION, INSTITUTION],
        id="wrong_institution: reply by a customer of another institution",
    ),
    pytest.param(
        in_status(S.CLOSING),
        move(S.CLOSED, R.CUSTOMER, actor=who(R.CUSTOMER, OTHER_INSTITUTION)),
        "wrong_institution",
        [OTHER_INSTITUTION],
        id="wrong_institution: another institution closes the case",
    ),
    pytest.param(
        in_status(S.CLOSING),
        move(S.CLOSED, R.CUSTOMER, actor=Actor(role=R.CUSTOMER, name="anon")),
        "wrong_institution",
        ["no institution"],
        id="wrong_institution: customer with no institution",
    ),
    pytest.param(
        in_status(S.CLOSING),
        move(S.CLOSED, R.SYSTEM),
        "forged_system",
        ["never accepted from outside"],
        id="forged_system: transition",
    ),
    pytest.param(
        in_status(S.PENDING_CUSTOMER_RESPONSE),
        reply(R.SYSTEM),
        "forged_system",
        ["never accepted from outside"],
        id="forged_system: customer reply",
    ),
    pytest.param(
        in_status(S.TIER1_ANALYSIS),
        handoff(2, R.SYSTEM),
        "forged_system",
        ["never accepted from outside"],
        id="forged_system: handoff",
    ),
    pytest.param(
        in_status(S.TIER1_ANALYSIS),
        move(S.TIER2_NEW, R.TIER1),
        "wrong_event",
        ["tier_handoff"],
        id="wrong_event: transition to Tier 2 New instead of a handoff",
    ),
    pytest.param(
        in_status(S.TIER2_ANALYSIS, owner_tier=2),
        move(S.TIER2_CLOSED, R.TIER2),
        "wrong_event",
        ["tier_handoff"],
        id="wrong_event: transition to Tier 2 Closed instead of a handoff",
    ),
    pytest.param(
        in_status(S.PENDING_CUSTOMER_RESPONSE),
        move(S.WAITING_FOR_PROCESS, R.CUSTOMER),
        "wrong_event",
        ["customer_reply"],
        id="wrong_event: transition to Waiting for Process instead of a reply",
    ),
    pytest.param(
        in_status(S.PENDING_CUSTOMER_RESPONSE),
        move(S.CLOSING, R.TIER1),
        "wrong_event",
        ["deadline"],
        id="wrong_event: Pending Customer Response -> Closing is the timer's",
    ),
    pytest.param(
        in_status(S.DEVELOPMENT, owner_tier=2, case=HIGH),
        move(S.PENDING_WORK_PLAN, R.DEVELOPMENT),
        "guard",
        ["normal or low priority", "high"],
        id="guard: Pending Work Plan for a high-priority case",
    ),
    pytest.param(
        in_status(S.DEVELOPMENT, owner_tier=2, case=CRITICAL),
        move(S.PENDING_WORK_PLAN, R.DEVELOPMENT),
        "guard",
        ["critical"],
        id="guard: Pending Work Plan for a critical case",
    ),
    pytest.param(
        in_status(S.DEVELOPMENT, owner_tier=2, case=SEVERAL),
        move(S.PENDING_WORK_PLAN, R.DEVELOPMENT),
        "guard",
        ["several institutions"],
        id="guard: Pending Work Plan when several institutions are affected",
    ),
    pytest.param(
        in_status(S.DEVELOPMENT, owner_tier=2),
        move(S.PENDING_RELEASE, R.TIER2),
        "guard",
        ["release_id"],
        id="guard: Pending Release without a release",
    ),
    pytest.param(
        in_status(S.CLOSING, came_from=S.WAITING_FOR_PROCESS),
        move(S.PENDING_CUSTOMER_TESTING, R.CUSTOMER),
        "guard",
        ["from Pending Release"],
        id="guard: Closing -> Pending Customer Testing not after a release",
    ),
    pytest.param(
        in_status(S.WAITING_FOR_PROCESS, owner_tier=1),
        move(S.TIER2_ANALYSIS, R.TIER2),
        "guard",
        ["Tier 1 Analysis", "owner tier is 1"],
        id="guard: Waiting for Process -> Tier 2 Analysis with owner tier 1",
    ),
    pytest.param(
        in_status(S.WAITING_FOR_PROCESS, owner_tier=2),
        move(S.TIER1_ANALYSIS, R.TIER1),
        "guard",
        ["Tier 2 Analysis", "owner tier is 2"],
        id="guard: Waiting for Process -> Tier 1 Analysis with owner tier 2",
    ),
    pytest.param(
        in_status(S.WAITING_FOR_PROCESS, owner_tier=1),
        move(S.TIER1_ANALYSIS, R.KB_TEAM),
        "guard",
        ["only tier1"],
        id="guard: kb_team takes back from Waiting for Process",
    ),
    pytest.param(
        in_status(S.PENDING_RELEASE, release_id=RELEASE),
        ReleaseShipped(release_id=OTHER_RELEASE, shipped_at=T0),
        "other_release",
        [OTHER_RELEASE, RELEASE],
        id="other_release: another release shipped",
    ),
]


@pytest.mark.parametrize(("state", "event", "reason", "words"), FORBIDDEN)
def test_forbidden_moves_are_rejected_with_their_reason(state, event, reason, words):
    refused = rejection(state, event, T0 + DAY)
    assert refused.reason == reason, refused.message
    for word in words:
        assert word in refused.message


def test_an_update_rejection_names_the_status_the_request_and_the_reason():
    state = in_status(S.NEW)
    refused = rejection(state, move(S.DEVELOPMENT, R.TIER1), T0)
    text = describe_rejection(state, "transition to Development", refused)
    assert text.startswith("case 00123 is in New; transition to Development rejected: ")
    assert "not a transition of the lifecycle" in text


CLOSED_EVENTS = [
    pytest.param(move(S.TIER1_ANALYSIS, R.TIER1), id="transition"),
    pytest.param(move(S.CLOSED, R.CUSTOMER), id="transition to Closed"),
    pytest.param(reply(), id="customer_reply"),
    pytest.param(handoff(2, R.TIER1), id="tier_handoff"),
    pytest.param(ReleaseShipped(release_id=RELEASE, shipped_at=T0), id="release_shipped"),
    pytest.param(Due(Deadline(at=T0, action=K.CLOSING_CLOSED, to=S.CLOSED)), id="deadline"),
    pytest.param(move(S.CLOSING, R.SYSTEM), id="forged system"),
]


@pytest.mark.parametrize("event", CLOSED_EVENTS)
def test_closed_is_final(event):
    state = in_status(S.CLOSED, closed_at=T0, release_id=RELEASE)
    refused = rejection(state, event, T0 + 400 * DAY)
    assert refused.reason == "closed"
    assert "case 00123 is closed; open a new case referencing it" in refused.message


def test_a_handoff_to_tier2_needs_one_of_the_three_reasons():
    for reason in HandoffReason:
        assert TierHandoff(to_tier=2, reason=reason, actor=who(R.TIER1)).reason == reason
    with pytest.raises(ValidationError, match="consult, deeper_analysis, defect_verification"):
        TierHandoff(to_tier=2, reason="it is hard", actor=who(R.TIER1))
    with pytest.raises(ValidationError):
        TierHandoff.model_validate({"to_tier": 3, "reason": "consult", "actor": who(R.TIER1)})
    # Back to Tier 1 the reason is free text.
    assert TierHandoff(to_tier=1, reason="answered", actor=who(R.TIER2)).reason == "answered"


def test_a_case_is_opened_by_a_customer_of_its_institution_or_by_tier1():
    decision = open_case(make_case(), T0)
    assert decision.state.status == S.NEW and decision.state.owner_tier == 1
    assert [type(e) for e in decision.effects] == [Persist, Notify]
    assert notices(decision)[0].template == MessageTemplate.OPENED
    assert open_case(make_case(opened_by=who(R.TIER1)), T0).state.status == S.NEW

    with pytest.raises(Rejection) as refused:
        open_case(make_case(opened_by=who(R.DEVELOPMENT)), T0)
    assert refused.value.reason == "wrong_role"
    with pytest.raises(Rejection) as refused:
        open_case(make_case(opened_by=who(R.CUSTOMER, OTHER_INSTITUTION)), T0)
    assert refused.value.reason == "wrong_institution"


# ---- deadlines, at the guide's real durations ------------------------------------------------


def test_pending_customer_response_reminds_after_two_weeks_then_closes():
    state = decide(
        in_status(S.TIER1_ANALYSIS), move(S.PENDING_CUSTOMER_RESPONSE, R.TIER1), T0
    ).state

    # What happens if nobody acts: a reminder, Closing two weeks later, Closed two more on.
    assert [(d.action, d.at, d.to) for d in timeline(state)] == [
        (K.PCR_REMINDER, T0 + 14 * DAY, None),
        (K.PCR_CLOSING, T0 + 28 * DAY, S.CLOSING),
        (K.CLOSING_CLOSED, T0 + 42 * DAY, S.CLOSED),
    ]
    assert snapshot(state).timeline == timeline(state)
    assert "reminder to the customer" in details_markdown(state)

    early = rejection(state, Due(pending_deadlines(state)[0]), T0 + 14 * DAY - MINUTE)
    assert early.reason == "not_due"

    reminded, due = fire(state)
    assert due.action == K.PCR_REMINDER and due.at == T0 + 14 * DAY
    assert reminded.state.status == S.PENDING_CUSTOMER_RESPONSE
    assert reminded.state.status_since == T0, "a reminder does not restart the clock"
    (mail,) = notices(reminded)
    assert (mail.template, mail.recipient) == (MessageTemplate.REMINDER, "contact")
    assert mail.facts["closes_at"] == (T0 + 28 * DAY).isoformat()
    assert not persists(reminded), "no status change, no history row"
    # Once per stay: no second reminder ahead.
    assert [d.action for d in pending_deadlines(reminded.state)] == [K.PCR_CLOSING]

    closing, due = fire(reminded.state)
    assert due.at == T0 + 28 * DAY
    assert closing.state.status == S.CLOSING
    assert closing.state.history[-1].actor.role == R.SYSTEM
    (mail,) = notices(closing)
    assert mail.template == MessageTemplate.CLOSING
    assert mail.facts["closes_at"] == (T0 + 42 * DAY).isoformat()

    closed, due = fire(closing.state)
    assert due.at == T0 + 42 * DAY
    assert closed.state.status == S.CLOSED
    assert closed.state.closed_at == T0 + 42 * DAY
    assert notices(closed)[0].template == MessageTemplate.CLOSED
    assert next_deadline(closed.state) is None


def test_the_reminder_is_sent_again_on_a_new_stay():
    state = in_status(S.PENDING_CUSTOMER_RESPONSE, reminder_sent=True)
    state = decide(state, reply(), T0 + 20 * DAY).state
    state = decide(state, move(S.TIER1_ANALYSIS, R.TIER1), T0 + 21 * DAY).state
    state = decide(state, move(S.PENDING_CUSTOMER_RESPONSE, R.TIER1), T0 + 22 * DAY).state
    due = next_deadline(state)
    assert due is not None
    assert (due.action, due.at) == (K.PCR_REMINDER, T0 + 36 * DAY)


def test_a_reply_before_the_reminder_cancels_the_chain():
    state = in_status(S.PENDING_CUSTOMER_RESPONSE)
    reminder = next_deadline(state)
    assert reminder is not None

    answered = decide(state, reply(), T0 + 13 * DAY)

    assert answered.state.status == S.WAITING_FOR_PROCESS
    assert next_deadline(answered.state) is None and timeline(answered.state) == []
    assert [n.template for n in notices(answered)] == [MessageTemplate.CUSTOMER_COMMENT]
    assert notices(answered)[0].recipient == "support"
    stale = rejection(answered.state, Due(reminder), T0 + 14 * DAY)
    assert stale.reason == "not_due"


def test_a_customer_reply_reopens_a_closing_case():
    state = decide(in_status(S.TIER1_ANALYSIS), move(S.CLOSING, R.TIER1), T0).state
    closes = next_deadline(state)
    assert closes is not None and closes.at == T0 + 14 * DAY

    reopened = decide(state, reply(), T0 + 13 * DAY).state

    assert reopened.status == S.WAITING_FOR_PROCESS and reopened.came_from == S.CLOSING
    assert next_deadline(reopened) is None
    assert rejection(reopened, Due(closes), T0 + 14 * DAY).reason == "not_due"
    back = decide(reopened, move(S.TIER1_ANALYSIS, R.TIER1), T0 + 14 * DAY).state
    assert back.status == S.TIER1_ANALYSIS


def test_the_customer_confirms_closing():
    state = in_status(S.CLOSING)
    closed = decide(state, move(S.CLOSED, R.CUSTOMER), T0 + DAY).state
    assert closed.status == S.CLOSED and closed.closed_at == T0 + DAY


def test_pending_work_plan_is_reassessed_quarterly_and_expires_after_24_months():
    # Entered on a month end: reviews clamp to each quarter's last day, counted from entry.
    state = in_status(S.DEVELOPMENT, owner_tier=2, since=T0 - DAY)
    state = decide(state, move(S.PENDING_WORK_PLAN, R.DEVELOPMENT), T0).state
    reviews = [
        at(2025, 4, 30, 9, 30),
        at(2025, 7, 31, 9, 30),
        at(2025, 10, 31, 9, 30),
        at(2026, 1, 31, 9, 30),
        at(2026, 4, 30, 9, 30),
        at(2026, 7, 31, 9, 30),
        at(2026, 10, 31, 9, 30),
    ]
    expiry = at(2027, 1, 31, 9, 30)

    assert [(d.action, d.at) for d in timeline(state)] == [
        *[(K.WORK_PLAN_REVIEW, r) for r in reviews],
        (K.WORK_PLAN_EXPIRY, expiry),
        (K.CLOSING_CLOSED, expiry + 14 * DAY),
    ]

    for number, instant in enumerate(reviews, start=1):
        decision, due = fire(state)
        assert (due.action, due.at) == (K.WORK_PLAN_REVIEW, instant)
        state = decision.state
        assert state.status == S.PENDING_WORK_PLAN and state.status_since == T0
        # "Reassessed by Support and Development": one notice to each.
        mails = notices(decision)
        assert [(m.template, m.recipient) for m in mails] == [
            (MessageTemplate.WORK_PLAN_REVIEW, "support"),
            (MessageTemplate.WORK_PLAN_REVIEW, "development"),
        ]
        assert {m.facts["review_number"] for m in mails} == {number}
        assert len({m.key for m in mails}) == 2

    # No review at the expiry instant: only the expiry is ahead.
    assert [(d.action, d.at) for d in pending_deadlines(state)] == [(K.WORK_PLAN_EXPIRY, expiry)]
    decision, _ = fire(state)
    assert decision.state.status == S.CLOSING
    assert decision.state.history[-1].note == "deadline work_plan_expiry"


def test_a_late_review_does_not_shift_the_next_one():
    state = in_status(S.PENDING_WORK_PLAN, owner_tier=2)
    decision, _ = fire(state, lateness=40 * DAY)  # the worker was down for weeks
    due = next_deadline(decision.state)
    assert due is not None and due.at == at(2025, 7, 31, 9, 30)


def test_a_review_leads_to_development():
    state = in_status(S.PENDING_WORK_PLAN, owner_tier=2, reviews_done=2)
    state = decide(state, move(S.DEVELOPMENT, R.DEVELOPMENT), T0 + 200 * DAY).state
    assert state.status == S.DEVELOPMENT and next_deadline(state) is None


def test_pending_release_closes_two_weeks_after_the_release_ships():
    state = in_status(S.DEVELOPMENT, owner_tier=2)
    entered = decide(state, move(S.PENDING_RELEASE, R.TIER2, release_id=RELEASE), T0)
    state = entered.state
    assert state.release_id == RELEASE
    (register,) = [e for e in entered.effects if isinstance(e, Register)]
    assert register.release_id == RELEASE and register.case_number == "00123"
    assert notices(entered)[0].template == MessageTemplate.PENDING_RELEASE
    assert notices(entered)[0].facts["release_id"] == RELEASE
    # Before shipping nothing is scheduled: the release decides.
    assert next_deadline(state) is None and timeline(state) == []

    shipped_at = T0 + 5 * DAY
    shipped = decide(
        state, ReleaseShipped(release_id=RELEASE, shipped_at=shipped_at), shipped_at + HOUR
    )
    state = shipped.state
    assert state.release_shipped_at == shipped_at
    assert [n.template for n in notices(shipped)] == [MessageTemplate.RELEASE_SHIPPED]
    due = next_deadline(state)
    assert due is not None
    assert (due.action, due.at, due.to) == (K.RELEASE_CLOSING, shipped_at + 14 * DAY, S.CLOSING)

    # A second delivery has no effect.
    again = decide(state, ReleaseShipped(release_id=RELEASE, shipped_at=T0 + 6 * DAY), T0 + 7 * DAY)
    assert again.effects == [] and again.state == state

    closing, _ = fire(state)
    assert closing.state.status == S.CLOSING and closing.state.came_from == S.PENDING_RELEASE
    # The customer is not ready to close: testing, which closes by itself after 11 months.
    testing = decide(closing.state, move(S.PENDING_CUSTOMER_TESTING, R.CUSTOMER), at(2025, 3, 31))
    due = next_deadline(testing.state)
    assert due is not None
    assert (due.action, due.at, due.to) == (K.TESTING_CLOSED, at(2026, 2, 28), S.CLOSED)
    closed, _ = fire(testing.state)
    assert closed.state.status == S.CLOSED


def test_a_release_shipped_before_entry_starts_the_clock_at_entry():
    state = in_status(S.DEVELOPMENT, owner_tier=2)
    entry = T0 + 10 * DAY
    state = decide(state, move(S.PENDING_RELEASE, R.TIER2, release_id=RELEASE), entry).state
    # The release answers the registration at once: it shipped at T0, before the case entered.
    state = decide(state, ReleaseShipped(release_id=RELEASE, shipped_at=T0), entry + MINUTE).state
    due = next_deadline(state)
    assert due is not None and due.at == entry + 14 * DAY


def test_a_ship_instant_in_the_future_cannot_push_the_clock_out():
    state = in_status(S.PENDING_RELEASE, release_id=RELEASE)
    now = T0 + DAY
    state = decide(state, ReleaseShipped(release_id=RELEASE, shipped_at=now + 30 * DAY), now).state
    assert state.release_shipped_at == now
    due = next_deadline(state)
    assert due is not None and due.at == now + 14 * DAY


def test_customer_testing_closes_after_eleven_months():
    state = in_status(S.PENDING_CUSTOMER_TESTING, owner_tier=2)
    assert [(d.action, d.at) for d in timeline(state)] == [
        (K.TESTING_CLOSED, at(2025, 12, 31, 9, 30))
    ]
    decision, _ = fire(state)
    assert decision.state.status == S.CLOSED
    assert decision.state.history[-1].actor.role == R.SYSTEM


def test_a_fix_that_did_not_work_goes_back_to_support():
    state = in_status(S.PENDING_CUSTOMER_TESTING, owner_tier=2)
    state = decide(state, reply(), T0 + 30 * DAY).state
    assert state.status == S.WAITING_FOR_PROCESS and next_deadline(state) is None
    assert decide(state, move(S.TIER2_ANALYSIS, R.TIER2), T0 + 31 * DAY).state.status == (
        S.TIER2_ANALYSIS
    )


def test_a_demo_policy_in_minutes():
    policy = DeadlinePolicy(pcr_reminder="2min", pcr_closing="4min", closing_closed="3min")
    state = open_case(make_case(policy=policy, opened_by=who(R.TIER1)), T0).state
    state = decide(state, move(S.TIER1_ANALYSIS, R.TIER1), T0).state
    state = decide(state, move(S.PENDING_CUSTOMER_RESPONSE, R.TIER1), T0).state
    assert [d.at - T0 for d in timeline(state)] == [2 * MINUTE, 4 * MINUTE, 7 * MINUTE]


def test_a_deadline_of_another_kind_is_not_due():
    state = in_status(S.CLOSING)
    fake = Deadline(at=T0, action=K.TESTING_CLOSED, to=S.CLOSED)
    assert rejection(state, Due(fake), T0 + 400 * DAY).reason == "not_due"


@pytest.mark.parametrize(
    "status",
    [S.NEW, S.TIER1_ANALYSIS, S.TIER2_ANALYSIS, S.DEVELOPMENT, S.PENDING_RELEASE],
)
def test_a_reply_where_no_reply_transition_exists_is_a_comment(status):
    state = in_status(status, owner_tier=2 if status in TIER2_SIDE else 1, release_id=RELEASE)
    assert not rules_from(status, Via.CUSTOMER_REPLY)

    decision = decide(state, reply(), T0 + DAY)

    assert decision.state.status == status and decision.state.status_since == T0
    assert decision.state.comments == state.comments + 1
    assert decision.state.seq == state.seq + 1
    assert not persists(decision)
    (mail,) = notices(decision)
    assert (mail.template, mail.recipient) == (MessageTemplate.CUSTOMER_COMMENT, "support")
    assert mail.facts["text"] == "Here are the logs you asked for."


# ---- effects ---------------------------------------------------------------------------------


def test_one_history_row_per_status_change():
    d = open_case(make_case(), T0)
    state, now = d.state, T0
    rows = [p.history for p in persists(d)]
    changes: list[tuple[Status | None, Status]] = [(None, S.NEW)]

    def step(event: Event, later: timedelta = HOUR) -> None:
        nonlocal state, now
        now += later
        decision = decide(state, event, now)
        if decision.state.status != state.status:
            changes.append((state.status, decision.state.status))
        else:
            assert not persists(decision)
        rows.extend(p.history for p in persists(decision))
        state = decision.state

    def tick() -> None:
        nonlocal state, now
        decision, due = fire(state)
        now = due.at
        if decision.state.status != state.status:
            changes.append((state.status, decision.state.status))
        rows.extend(p.history for p in persists(decision))
        state = decision.state

    step(move(S.TIER1_ANALYSIS, R.TIER1))
    step(move(S.PENDING_CUSTOMER_RESPONSE, R.TIER1))
    tick()  # reminder: no row
    step(reply())
    step(reply())  # a comment: no row
    step(move(S.TIER1_ANALYSIS, R.TIER1))
    step(handoff(2, R.TIER1, "defect_verification"))
    step(move(S.TIER2_ANALYSIS, R.TIER2))
    step(move(S.DEVELOPMENT, R.TIER2))
    step(move(S.PENDING_RELEASE, R.TIER2, release_id=RELEASE))
    step(ReleaseShipped(release_id=RELEASE, shipped_at=now))  # no row
    tick()  # -> Closing
    step(move(S.PENDING_CUSTOMER_TESTING, R.CUSTOMER))
    step(move(S.CLOSING, R.CUSTOMER))
    tick()  # -> Closed

    assert state.status == S.CLOSED
    assert [(r.from_status, r.to_status) for r in rows if r] == changes
    assert len(rows) == len(changes) == 13
    assert [r.seq for r in rows if r] == [h.seq for h in state.history]


def random_walk(rng: random.Random, steps: int) -> tuple[CaseState, list[str], int]:
    """A long life that never closes; returns the state, every effect key, status changes."""
    first = open_case(make_case(), T0)
    state, now, keys, changes = first.state, T0, [e.key for e in first.effects], 0
    for _ in range(steps):
        now += rng.choice(GAPS)
        event, now = next_event(rng.choice, state, now, avoid_closed=True)
        try:
            decision = decide(state, event, now)
        except Rejection:
            continue
        changes += decision.state.status != state.status
        keys += [e.key for e in decision.effects]
        state = decision.state
    return state, keys, changes


def test_idempotency_keys_are_unique_across_a_long_life():
    state, keys, changes = random_walk(random.Random(20250131), 3000)
    assert changes > 3 * HISTORY_TAIL, "the walk should move a lot"
    assert len(keys) == len(set(keys))
    assert all(key.startswith("case-00123:") for key in keys)
    assert len(state.history) == HISTORY_TAIL
    assert len(state.recent) == RECENT_TAIL


# ---- random event sequences ------------------------------------------------------------------

T = TypeVar("T")
Pick = Callable[[Sequence[T]], T]

GAPS = [timedelta(0), MINUTE, HOUR, DAY, 10 * DAY, 40 * DAY, 100 * DAY]
KINDS = ["transition"] * 4 + ["reply", "handoff", "shipped", "due", "due"]


def _actor(pick: Pick, roles: Sequence[Role]) -> Actor:
    role = pick(roles)
    if role is R.CUSTOMER:
        return who(role, pick([INSTITUTION, INSTITUTION, INSTITUTION, OTHER_INSTITUTION]))
    return who(role, pick([None, "Vendor Inc."]))


def next_event(
    pick: Pick, state: CaseState, now: datetime, avoid_closed: bool = False
) -> tuple[Event, datetime]:
    """One random event, biased towards moves the table knows so walks go deep."""
    kind = pick(KINDS)
    if kind == "due":
        due = next_deadline(state)
        if due is None or (avoid_closed and due.to is S.CLOSED):
            made_up = Deadline(at=now, action=pick(list(DeadlineKind)))
            return Due(made_up), now
        return Due(due), max(now, due.at)
    if kind == "shipped":
        release = pick([state.release_id or RELEASE, RELEASE, OTHER_RELEASE])
        offset = pick([-20 * DAY, -DAY, timedelta(0), HOUR, 3 * DAY])
        return ReleaseShipped(release_id=release, shipped_at=now + offset), now
    if kind == "reply":
        return CustomerReply(text="more", actor=_actor(pick, [R.CUSTOMER] * 6 + list(Role))), now
    if kind == "handoff":
        to_tier = pick([1, 2])
        reason = pick(list(HandoffReason)) if to_tier == 2 else "answered"
        actor = _actor(pick, [R.TIER1, R.TIER2, R.TIER1, R.TIER2, *Role])
        return TierHandoff(to_tier=to_tier, reason=reason, actor=actor), now
    likely = [t for r in rules_from(state.status, Via.TRANSITION) for t in Status if t in r.targets]
    pool = pick([likely, likely, likely, list(Status)]) if likely else list(Status)
    if avoid_closed:
        pool = [s for s in pool if s is not S.CLOSED] or [S.NEW]
    to = pick(pool)
    roles = [x for r in TABLE if state.status in r.sources and to in r.targets for x in r.roles]
    roles = [x for x in Role if x in roles]
    actor = _actor(pick, pick([roles, roles, roles, list(Role)]) if roles else list(Role))
    release = pick([RELEASE, RELEASE, OTHER_RELEASE, None])
    return TransitionRequest(to=to, actor=actor, release_id=release), now


def _via(event: Event) -> tuple[Via, Role]:
    match event:
        case Due():
            return Via.DEADLINE, R.SYSTEM
        case CustomerReply():
            return Via.CUSTOMER_REPLY, event.actor.role
        case TierHandoff():
            return Via.TIER_HANDOFF, event.actor.role
        case TransitionRequest():
            return Via.TRANSITION, event.actor.role
    raise AssertionError(f"{event!r} changes no status")


def check_step(old: CaseState, event: Event, now: datetime, decision: Decision) -> None:
    new = decision.state
    if isinstance(event, ReleaseShipped) and old.release_shipped_at is not None:
        assert decision.effects == [] and new == old, "a known release changes nothing"
        return
    assert new.seq > old.seq
    assert old.status != S.CLOSED
    if new.status != old.status:
        via, role = _via(event)
        rows = [
            r
            for r in rules()
            if old.status in r.sources and new.status in r.targets and r.via is via
        ]
        assert any(role in r.roles for r in rows), f"{old.status} -> {new.status} not in TABLE"
        if isinstance(event, Due):
            assert any(r.deadline is event.deadline.action for r in rows)
        # A deadline on time acts at its own instant; a late one counts the next stay from now.
        on_time = isinstance(event, Due) and now - event.deadline.at <= ON_TIME
        entered = event.deadline.at if on_time and isinstance(event, Due) else now
        assert (new.came_from, new.status_since) == (old.status, entered)
        (persist,) = persists(decision)
        assert persist.history is not None
        assert (persist.history.from_status, persist.history.to_status) == (old.status, new.status)
        last = new.history[-1]
        assert (last.from_status, last.to_status, last.seq) == (old.status, new.status, new.seq)
        expected_tier = {S.TIER2_NEW: 2, S.TIER2_CLOSED: 1}.get(new.status, old.owner_tier)
        if (old.status, new.status) == (S.DEVELOPMENT, S.TIER2_ANALYSIS):
            expected_tier = 2
        assert new.owner_tier == expected_tier
    else:
        assert not persists(decision)
        assert (new.status_since, new.owner_tier) == (old.status_since, old.owner_tier)
        if isinstance(event, CustomerReply):
            # A reply where no reply transition exists is a comment for the owner tier.
            assert not rules_from(old.status, Via.CUSTOMER_REPLY)
            assert [(n.template, n.recipient) for n in notices(decision)] == [
                (MessageTemplate.CUSTOMER_COMMENT, "support")
            ]


def check_state(state: CaseState) -> None:
    assert len(state.history) <= HISTORY_TAIL and len(state.recent) <= RECENT_TAIL
    assert state.history[-1].to_status == state.status
    seqs = [h.seq for h in state.history]
    assert seqs == sorted(set(seqs)) and seqs[-1] <= state.seq
    assert state.owner_tier in (1, 2)
    due = next_deadline(state)
    if state.status in DEADLINE_STATUSES and not (
        state.status == S.PENDING_RELEASE and state.release_shipped_at is None
    ):
        assert due is not None, f"lost the deadline of {state.status}"
        assert due.at >= state.status_since
    else:
        assert due is None, f"{state.status} has no deadline, got {due}"


def test_the_deadline_statuses_match_the_table():
    timer_sources = {s for r in TABLE if r.via is Via.DEADLINE for s in r.sources}
    assert timer_sources == DEADLINE_STATUSES


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    priority=st.sampled_from(Priority),
    several=st.booleans(),
    opener=st.sampled_from([R.CUSTOMER, R.TIER1]),
    steps=st.integers(1, 80),
    patient=st.booleans(),  # half the runs never close, so they go deeper
    # Every random choice of the run, drawn at once (cheap, and shrinks towards first options).
    choices=st.binary(min_size=8 * 80, max_size=8 * 80),
)
def test_random_event_sequences_keep_the_lifecycle_invariants(
    priority, several, opener, steps, patient, choices
):
    stream = iter(choices)

    def pick(options: Sequence[T]) -> T:
        return options[next(stream, 0) % len(options)]

    case = make_case(
        priority=priority, affects_multiple_institutions=several, opened_by=who(opener)
    )
    first = open_case(case, T0)
    state, now = first.state, T0
    keys = [e.key for e in first.effects]
    check_state(state)
    for _ in range(steps):
        now += pick(GAPS)
        if (due := next_deadline(state)) is not None and now < due.at:
            assert rejection(state, Due(due), now).reason == "not_due"
        event, now = next_event(pick, state, now, avoid_closed=patient)
        before = state.model_dump()
        try:
            decision = decide(state, event, now)
        except Rejection as refused:
            assert refused.reason in REASONS
            if state.status == S.CLOSED:
                assert refused.reason == "closed", "Closed is absorbing"
            continue
        finally:
            assert state.model_dump() == before, "decide never mutates its input"
        check_step(state, event, now, decision)
        keys += [e.key for e in decision.effects]
        state = decision.state
        check_state(state)
    assert len(keys) == len(set(keys)), "idempotency keys are unique per case"


# ---- month-end arithmetic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(at(2025, 1, 31), 1, at(2025, 2, 28), id="Jan 31 + 1 = Feb 28"),
        pytest.param(at(2024, 1, 31), 1, at(2024, 2, 29), id="Jan 31 + 1 = Feb 29 (leap)"),
        pytest.param(at(2025, 3, 31), 1, at(2025, 4, 30), id="Mar 31 + 1 = Apr 30"),
        pytest.param(at(2025, 12, 31), 2, at(2026, 2, 28), id="across a year end"),
        pytest.param(at(2024, 2, 29), 12, at(2025, 2, 28), id="Feb 29 + 12"),
        pytest.param(at(2025, 1, 31), 24, at(2027, 1, 31), id="24 months"),
        pytest.param(at(2025, 5, 15, 13, 45), 11, at(2026, 4, 15, 13, 45), id="keeps the time"),
    ],
)
def test_months_clamp_to_the_month_end(start, months, expected):
    assert add_months(start, months) == expected


def test_quarterly_from_january_31_counts_from_the_start():
    quarter = Span.parse("3mo")
    assert [quarter.after(at(2025, 1, 31, 8), k) for k in range(1, 5)] == [
        at(2025, 4, 30, 8),
        at(2025, 7, 31, 8),
        at(2025, 10, 31, 8),
        at(2026, 1, 31, 8),
    ]


def test_spans_parse_and_print():
    assert Span.parse("14d") == Span(14, "d")
    assert Span.parse(" 2 min ") == Span(2, "min")
    assert str(Span.parse("24mo")) == "24mo"
    assert Span.parse("2w").after(T0) == T0 + 14 * DAY
    assert DeadlinePolicy().model_dump(mode="json")["work_plan_review"] == "3mo"


@pytest.mark.parametrize("text", ["", "14", "d", "14 days", "3m", "-1d", "1.5d", "1y"])
def test_a_malformed_span_says_how_to_write_one(text):
    with pytest.raises(SpanError, match=r"is not a span: write <number><unit>.*e\.g\. '14d'"):
        Span.parse(text)


def test_span_errors_are_clear():
    with pytest.raises(SpanError, match="longer than zero"):
        Span.parse("0d")
    with pytest.raises(SpanError, match="unknown unit 'y'"):
        Span(3, "y")
    with pytest.raises(ValidationError, match="'two weeks' is not a span"):
        DeadlinePolicy(pcr_reminder="two weeks")
    with pytest.raises(ValidationError, match="a span is a string"):
        DeadlinePolicy(pcr_reminder=14)
    with pytest.raises(ValidationError, match=r"pcr_reminder \(28d\) must come before pcr_closing"):
        DeadlinePolicy(pcr_reminder="28d", pcr_closing="14d")
