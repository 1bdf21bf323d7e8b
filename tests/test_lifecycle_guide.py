"""The guide read closely, and policies applied to open cases: the pure core.

Who moves a case where, late deadlines that never shorten the next stay, and a policy changed
while a case waits: each rule as the guide says it, at the real 14/28/42 days."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.test_lifecycle import (
    DAY,
    HOUR,
    INSTITUTION,
    MINUTE,
    RELEASE,
    T0,
    fire,
    in_status,
    make_case,
    move,
    notices,
    persists,
    rejection,
    reply,
    who,
)
from workflows.calendar import SHORTEST_SPAN, Span
from workflows.contract import (
    ApplyPolicy,
    CustomerReply,
    DeadlineKind,
    DeadlinePolicy,
    MessageTemplate,
    PolicyOverrides,
    PolicySettings,
    Priority,
    ReleaseShipped,
    Role,
    Status,
    TransitionRequest,
)
from workflows.lifecycle import (
    ON_TIME,
    CaseState,
    Due,
    Rejection,
    decide,
    next_deadline,
    open_case,
    pending_deadlines,
    resolve_policy,
    snapshot,
)

S, R, K = Status, Role, DeadlineKind


def apply(policy: dict[str, str], role: Role = R.TIER1, reason: str = "new promise") -> ApplyPolicy:
    return ApplyPolicy(policy=PolicyOverrides(**policy), actor=who(role), reason=reason)


# ---- who moves a case where ------------------------------------------------------------------


@pytest.mark.parametrize(("owner_tier", "analyst"), [(1, R.TIER1), (2, R.TIER2)])
def test_pending_release_is_set_by_the_support_analyst_that_owns_the_case(owner_tier, analyst):
    state = in_status(S.DEVELOPMENT, owner_tier=owner_tier)
    decision = decide(state, move(S.PENDING_RELEASE, analyst, release_id=RELEASE), T0 + DAY)
    assert decision.state.status == S.PENDING_RELEASE

    other = R.TIER2 if analyst is R.TIER1 else R.TIER1
    refused = rejection(state, move(S.PENDING_RELEASE, other, release_id=RELEASE), T0 + DAY)
    assert refused.reason == "guard"
    assert f"owns the case: {analyst}" in refused.message


def test_development_may_not_set_pending_release_and_is_told_who_may():
    state = in_status(S.DEVELOPMENT, owner_tier=2)
    refused = rejection(state, move(S.PENDING_RELEASE, R.DEVELOPMENT, release_id=RELEASE), T0)
    assert refused.reason == "wrong_role"
    assert "the Support analyst that owns the case" in refused.message


def test_pending_work_plan_is_developments_decision_from_development_only():
    state = in_status(S.DEVELOPMENT, owner_tier=2)
    assert decide(state, move(S.PENDING_WORK_PLAN, R.DEVELOPMENT), T0).state.status == (
        S.PENDING_WORK_PLAN
    )
    assert rejection(state, move(S.PENDING_WORK_PLAN, R.TIER2), T0).reason == "wrong_role"
    from_tier2 = in_status(S.TIER2_ANALYSIS, owner_tier=2)
    refused = rejection(from_tier2, move(S.PENDING_WORK_PLAN, R.TIER2), T0)
    assert refused.reason == "not_allowed"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"priority": Priority.HIGH}, "normal or low"),
        ({"affects_multiple_institutions": True}, "several"),
    ],
)
def test_pending_work_plan_keeps_its_guards(fields, words):
    state = in_status(S.DEVELOPMENT, owner_tier=2, case=make_case(**fields))
    refused = rejection(state, move(S.PENDING_WORK_PLAN, R.DEVELOPMENT), T0)
    assert refused.reason == "guard" and words in refused.message


def test_customer_testing_only_after_the_release_shipped():
    waiting = in_status(S.PENDING_RELEASE, owner_tier=2, release_id=RELEASE)
    refused = rejection(waiting, move(S.PENDING_CUSTOMER_TESTING, R.CUSTOMER), T0 + DAY)
    assert refused.reason == "guard"
    assert "has not shipped" in refused.message

    shipped = decide(waiting, ReleaseShipped(release_id=RELEASE, shipped_at=T0 + DAY), T0 + DAY)
    testing = decide(shipped.state, move(S.PENDING_CUSTOMER_TESTING, R.CUSTOMER), T0 + 2 * DAY)
    assert testing.state.status == S.PENDING_CUSTOMER_TESTING


def test_not_a_defect_makes_tier2_the_owner_and_a_reply_goes_back_to_tier2():
    # Tier 1 owns the case (it came to Development through Tier 2 Closed, say).
    state = in_status(S.DEVELOPMENT, owner_tier=1)
    state = decide(state, move(S.TIER2_ANALYSIS, R.DEVELOPMENT, note="not a defect"), T0).state
    assert (state.status, state.owner_tier) == (S.TIER2_ANALYSIS, 2)
    state = decide(state, move(S.PENDING_CUSTOMER_RESPONSE, R.TIER2), T0 + HOUR).state
    state = decide(state, reply(), T0 + DAY).state
    assert state.status == S.WAITING_FOR_PROCESS
    refused = rejection(state, move(S.TIER1_ANALYSIS, R.TIER1), T0 + 2 * DAY)
    assert refused.reason == "guard" and "Tier 2 Analysis" in refused.message
    back = decide(state, move(S.TIER2_ANALYSIS, R.TIER2), T0 + 2 * DAY).state
    assert back.status == S.TIER2_ANALYSIS


# ---- late deadlines --------------------------------------------------------------------------


def pcr(**fields: Any) -> CaseState:
    return in_status(S.PENDING_CUSTOMER_RESPONSE, **fields)


def test_after_a_20_day_outage_the_customer_still_gets_14_days_of_closing():
    state = pcr(reminder_sent=True)
    back = T0 + 48 * DAY  # Closing was due at 28 days; no worker ran until day 48
    decision, _due = fire(state, lateness=back - (T0 + 28 * DAY))
    closing = decision.state
    assert (closing.status, closing.status_since) == (S.CLOSING, back)
    row = closing.history[-1]
    assert (row.due, row.at) == (T0 + 28 * DAY, back)
    (notice,) = notices(decision)
    assert notice.template == MessageTemplate.CLOSING
    assert notice.facts["closes_at"] == (back + 14 * DAY).isoformat()
    assert notice.facts["closes_in"] == "14 days"
    # The full 14 days of Closing from the notice; never a Closing and a Closed at once.
    nxt = next_deadline(closing)
    assert nxt is not None and (nxt.action, nxt.at) == (K.CLOSING_CLOSED, back + 14 * DAY)
    assert rejection(closing, Due(nxt), back + MINUTE).reason == "not_due"


def test_a_deadline_a_few_seconds_late_keeps_the_guides_instants():
    state = pcr(reminder_sent=True)
    decision, due = fire(state, lateness=ON_TIME)
    assert decision.state.status_since == due.at
    assert decision.state.history[-1].due == due.at == decision.state.history[-1].at


def test_a_reminder_due_together_with_its_closing_is_not_sent():
    state = pcr()
    back = T0 + 30 * DAY  # both the reminder (14 days) and the Closing (28) fell due meanwhile
    reminder = next_deadline(state)
    assert reminder is not None and reminder.action == K.PCR_REMINDER
    skipped = decide(state, Due(reminder), back)
    assert notices(skipped) == [] and not persists(skipped)
    assert skipped.state.status == S.PENDING_CUSTOMER_RESPONSE
    closing = next_deadline(skipped.state)
    assert closing is not None and closing.action == K.PCR_CLOSING
    moved = decide(skipped.state, Due(closing), back)
    assert moved.state.status == S.CLOSING
    assert [n.template for n in notices(moved)] == [MessageTemplate.CLOSING]


def test_a_late_reminder_alone_is_still_sent():
    state = pcr()
    decision, _ = fire(state, lateness=3 * DAY)  # back before the Closing instant
    assert [n.template for n in notices(decision)] == [MessageTemplate.REMINDER]


def test_the_release_clock_still_counts_from_the_ship_instant():
    state = in_status(S.PENDING_RELEASE, owner_tier=2, release_id=RELEASE)
    shipped = T0 + DAY
    state = decide(state, ReleaseShipped(release_id=RELEASE, shipped_at=shipped), shipped).state
    due = next_deadline(state)
    assert due is not None and due.at == shipped + 14 * DAY


def test_reviews_missed_in_an_outage_are_one_notice_not_one_each():
    state = in_status(S.PENDING_WORK_PLAN, owner_tier=2)
    back = T0 + 200 * DAY  # reviews at 3 and 6 months fell due while no worker ran
    review = next_deadline(state)
    assert review is not None and review.action == K.WORK_PLAN_REVIEW
    decision = decide(state, Due(review), back)
    assert decision.state.reviews_done == 1  # one notice for the two reviews
    assert sorted(n.recipient for n in notices(decision)) == ["development", "support"]
    nxt = next_deadline(decision.state)
    assert nxt is not None and nxt.at > back


def test_a_review_period_shortened_a_year_into_the_stay_sends_one_notice():
    """A minute-long period applied after a year: one reassessment now, not half a million."""
    state = in_status(S.PENDING_WORK_PLAN, owner_tier=2)
    now = T0 + 365 * DAY
    state = decide(state, apply({"work_plan_review": "1min"}), now).state
    review = next_deadline(state)
    assert review is not None and review.at < now
    decision = decide(state, Due(review), now)
    assert len(notices(decision)) == 2
    nxt = next_deadline(decision.state)
    assert nxt is not None and nxt.at == now + MINUTE


def test_a_review_period_changed_again_after_minute_reviews_stays_in_the_calendar():
    """Found by hypothesis: a count of minute-long reviews times a 28-day period overflowed."""
    state = in_status(S.PENDING_WORK_PLAN, owner_tier=2)
    now = T0 + 100 * DAY
    state = decide(state, apply({"work_plan_review": "1min"}), now).state
    review = next_deadline(state)
    assert review is not None
    state = decide(state, Due(review), now).state
    state = decide(state, apply({"work_plan_review": "28d"}), now).state
    nxt = next_deadline(state)
    assert nxt is not None and nxt.at == T0 + 112 * DAY  # the 4th 28-day review from entry


@pytest.mark.parametrize(
    ("span", "start", "end", "times"),
    [
        ("3mo", T0, T0 + 200 * DAY, 2),  # Jan 31 -> Apr 30, Jul 31 (Aug 19 is the end)
        ("1mo", T0, T0 + 28 * DAY, 1),  # Feb 28 is a month after Jan 31
        ("1min", T0, T0 + HOUR, 60),
        ("14d", T0, T0 - DAY, 0),
    ],
)
def test_how_many_spans_fit(span, start, end, times):
    assert Span.parse(span).times_within(start, end) == times


def test_work_plan_reassessments_go_to_support_and_development():
    state = in_status(S.PENDING_WORK_PLAN, owner_tier=2)
    decision, _ = fire(state)
    assert sorted(n.recipient for n in notices(decision)) == ["development", "support"]


# ---- the organisation's default policy, and the opener's -------------------------------------


def test_a_customer_opens_with_the_defaults():
    case = make_case(policy=PolicyOverrides(pcr_reminder="1min"))
    state = open_case(case, T0).state
    assert state.policy == DeadlinePolicy()
    assert "defaults apply" in (state.history[-1].note or "")


def test_the_default_policy_under_a_staff_openers_override():
    case = make_case(opened_by=who(R.TIER1), policy=PolicyOverrides(pcr_reminder="3d"))
    opened = open_case(case, T0).state
    settings = PolicySettings(default=PolicyOverrides(pcr_reminder="10d", pcr_closing="20d"))
    decision = resolve_policy(opened, settings, T0)
    policy = decision.state.policy
    assert (str(policy.pcr_reminder), str(policy.pcr_closing)) == ("3d", "20d")
    (change,) = decision.state.policy_changes
    assert change.actor.role == R.SYSTEM and "CASES_DEFAULT_POLICY" in change.reason
    assert [(c.field, c.old, c.new) for c in change.changes] == [("pcr_closing", "28d", "20d")]
    (persist,) = persists(decision)
    assert persist.policy_change is not None and persist.policy_change.seq == change.seq


def test_no_default_policy_records_nothing():
    opened = open_case(make_case(), T0).state
    decision = resolve_policy(opened, PolicySettings(), T0)
    assert decision.effects == [] and decision.state.policy_changes == []


def test_an_override_below_the_shortest_fails_the_open():
    case = make_case(opened_by=who(R.TIER1), policy=PolicyOverrides(closing_closed="5s"))
    opened = open_case(case, T0).state
    with pytest.raises(Rejection, match="closing_closed is 5s; a deadline lies between 1 minute"):
        resolve_policy(opened, PolicySettings(), T0)
    # A worker for tests on a stopwatch allows it.
    assert resolve_policy(opened, PolicySettings(shortest="1s"), T0).state.policy.closing_closed


# ---- applying a policy to an open case -------------------------------------------------------


def test_a_reminder_moved_to_three_days_acts_three_days_after_entry():
    state = pcr()
    decision = decide(state, apply({"pcr_reminder": "3d"}), T0 + DAY)
    due = next_deadline(decision.state)
    assert due is not None and (due.action, due.at) == (K.PCR_REMINDER, T0 + 3 * DAY)
    (change,) = decision.state.policy_changes
    assert (change.actor.role, change.reason) == (R.TIER1, "new promise")
    assert [(c.field, c.old, c.new) for c in change.changes] == [("pcr_reminder", "14d", "3d")]
    assert snapshot(decision.state).policy_changes == [change]


def test_a_closing_moved_into_the_past_acts_at_once():
    state = pcr(reminder_sent=True)
    now = T0 + 25 * DAY
    changed = decide(state, apply({"pcr_closing": "20d"}), now).state
    due = next_deadline(changed)
    assert due is not None and due.at == T0 + 20 * DAY < now
    closing = decide(changed, Due(due), now).state
    assert (closing.status, closing.status_since) == (S.CLOSING, now)


def test_a_reminder_already_sent_in_this_stay_never_acts_again():
    state = pcr()
    state = fire(state)[0].state  # the reminder, at 14 days
    state = decide(state, apply({"pcr_reminder": "20d"}), T0 + 15 * DAY).state
    assert [d.action for d in pending_deadlines(state)] == [K.PCR_CLOSING]


def test_the_same_policy_again_changes_nothing():
    state = pcr()
    once = decide(state, apply({"pcr_reminder": "3d"}), T0 + DAY).state
    again = decide(once, apply({"pcr_reminder": "3d"}), T0 + DAY)
    assert again.effects == [] and again.state.policy_changes == once.policy_changes


@pytest.mark.parametrize("role", [R.CUSTOMER, R.DEVELOPMENT, R.PRODUCT_MANAGER, R.KB_TEAM])
def test_only_tier1_and_tier2_apply_a_policy(role):
    refused = rejection(pcr(), apply({"pcr_reminder": "3d"}, role), T0)
    assert refused.reason == "wrong_role"


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"pcr_reminder": "30d"}, "pcr_reminder (30d) must come before pcr_closing (28d)"),
        ({"closing_closed": "30s"}, "closing_closed is 30s; a deadline lies between 1 minute"),
    ],
)
def test_a_policy_out_of_bounds_is_refused_naming_the_field(policy, words):
    refused = rejection(pcr(), apply(policy), T0)
    assert refused.reason == "policy" and words in refused.message


@pytest.mark.parametrize("span", ["999999w", "121mo", "3653d"])
def test_no_span_longer_than_ten_years_passes_the_wire(span):
    with pytest.raises(ValidationError, match="between 1 minute and 120 months"):
        PolicyOverrides(closing_closed=span)


def test_the_longest_policy_cannot_leave_the_calendar():
    longest = {name: "120mo" for name in DeadlinePolicy.model_fields}
    longest["pcr_reminder"] = "119mo"
    state = in_status(S.PENDING_WORK_PLAN, since=datetime(9000, 1, 1, tzinfo=T0.tzinfo))
    state = decide(
        state,
        ApplyPolicy(policy=PolicyOverrides(**longest), actor=who(R.TIER2), reason="max"),
        state.status_since,
    ).state
    assert snapshot(state).timeline


# ---- hypothesis: policies at random moments --------------------------------------------------

SPANS = ["1min", "1h", "1d", "3d", "10d", "14d", "20d", "28d", "2w", "6w", "3mo", "24mo"]
FIELDS = list(DeadlinePolicy.model_fields)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(
        [S.PENDING_CUSTOMER_RESPONSE, S.CLOSING, S.PENDING_WORK_PLAN, S.PENDING_CUSTOMER_TESTING]
    ),
    steps=st.lists(
        st.tuples(
            st.sampled_from([timedelta(0), MINUTE, HOUR, DAY, 5 * DAY, 20 * DAY, 100 * DAY]),
            st.one_of(
                st.none(),
                st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(SPANS), min_size=1),
            ),
        ),
        max_size=25,
    ),
)
def test_policies_applied_at_random_never_lose_or_double_a_deadline(start, steps):
    """Each step: time passes (deadlines due meanwhile act, as the shell acts them), then maybe
    a policy. A deadline never acts twice in a stay, none is lost, and one whose instant has
    passed acts at the next step."""
    state = in_status(start, owner_tier=2)
    now = T0
    acted: list[tuple[int, DeadlineKind, int]] = []  # (stay, kind, review number)
    stay = 0
    for gap, policy in steps:
        now += gap
        while state.status is not S.CLOSED and (due := next_deadline(state)) and due.at <= now:
            before = state
            state = decide(state, Due(due), now).state
            if state.status != before.status:
                stay += 1
            else:
                key = (stay, due.action, state.reviews_done)
                assert key not in acted, f"{due.action} acted twice in one stay"
                acted.append(key)
        if state.status is S.CLOSED:
            break
        # Nothing due is left behind: the next deadline is ahead of now.
        nxt = next_deadline(state)
        assert nxt is None or nxt.at > now
        if policy is None:
            continue
        event = ApplyPolicy(policy=PolicyOverrides(**policy), actor=who(R.TIER1), reason="r")
        try:
            state = decide(state, event, now).state
        except Rejection as refused:
            assert refused.reason == "policy"
    if state.status in (S.PENDING_CUSTOMER_RESPONSE, S.CLOSING, S.PENDING_CUSTOMER_TESTING):
        assert next_deadline(state) is not None, "a waiting status lost its deadline"


SPAN_TEXT = st.builds(
    lambda n, u: f"{n}{u}",
    st.integers(1, 999_999),
    st.sampled_from(["s", "min", "h", "d", "w", "mo"]),
)


def _apply_or_none(policy: dict[str, str], role: Role) -> ApplyPolicy | None:
    try:
        return ApplyPolicy(policy=PolicyOverrides(**policy), actor=who(role), reason="r")
    except ValidationError:
        return None  # refused on the wire


EVENTS = st.one_of(
    st.builds(
        lambda to, role: TransitionRequest(to=to, actor=who(role), release_id=RELEASE),
        st.sampled_from(Status),
        st.sampled_from(Role),
    ),
    st.builds(lambda role: CustomerReply(text="hello", actor=who(role)), st.sampled_from(Role)),
    st.builds(
        lambda policy, role: _apply_or_none(policy, role),
        st.dictionaries(st.sampled_from(FIELDS), SPAN_TEXT, min_size=1),
        st.sampled_from(Role),
    ).filter(lambda event: event is not None),
    st.builds(
        lambda gap: ReleaseShipped(release_id=RELEASE, shipped_at=T0 + gap),
        st.sampled_from([-DAY, timedelta(0), DAY]),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.dictionaries(
        st.sampled_from(FIELDS),
        st.builds(
            lambda n, u: f"{n}{u}",
            st.integers(1, 999_999),
            st.sampled_from(["s", "min", "h", "d", "w", "mo"]),
        ),
    ),
    events=st.lists(st.tuples(st.sampled_from([MINUTE, DAY, 400 * DAY]), EVENTS), max_size=30),
)
def test_the_core_answers_or_rejects_and_never_fails(policy, events):
    """Random policies and events: ``decide`` returns a decision or raises ``Rejection``;
    nothing else, whatever the input (the workflow task must never fail)."""
    try:
        overrides = PolicyOverrides(**policy)
    except ValidationError:
        return  # refused on the wire, before any case sees it
    case = make_case(opened_by=who(R.TIER1), policy=overrides)
    try:
        state = open_case(case, T0).state
        state = resolve_policy(state, PolicySettings(shortest="1s"), T0).state
    except Rejection:
        return
    now = T0
    for gap, event in events:
        now += gap
        if state.status is S.CLOSED:
            break
        while (due := next_deadline(state)) and due.at <= now and state.status is not S.CLOSED:
            state = decide(state, Due(due), now).state
        if state.status is S.CLOSED:
            break
        with contextlib.suppress(Rejection):
            state = decide(state, event, now).state
        snapshot(state)  # a case always answers its snapshot


def test_span_words_and_bounds():
    assert Span.parse("14d").words() == "14 days" and Span.parse("1min").words() == "1 minute"
    assert Span.parse("1min") == SHORTEST_SPAN
    assert INSTITUTION
