"""Moving in, the pure core: a case from another help desk opens in its status with its clocks
running, at the guide's real lengths (README "Moving in")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from workflows.contract import (
    Actor,
    CaseInput,
    DeadlineKind,
    ImportedCase,
    MessageTemplate,
    Notify,
    Persist,
    PolicySettings,
    Register,
    Status,
)
from workflows.lifecycle import Rejection, import_case, imported_outcome, next_deadline

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
IMPORTER = Actor(role="importer", name="zendesk import")
DEFAULTS = PolicySettings()


def case(status: str, since: datetime, **imported: Any) -> CaseInput:
    fields: dict[str, Any] = {"priority": imported.pop("priority", "normal")}
    if "affects_multiple_institutions" in imported:
        fields["affects_multiple_institutions"] = imported.pop("affects_multiple_institutions")
    return CaseInput(
        case_number=imported.pop("case_number", "ZD-4711"),
        institution="Alma University",
        product="Alma",
        title="Loans report shows wrong totals",
        contact_email="ann@alma.example",
        opened_by=imported.pop("opened_by", IMPORTER),
        imported=ImportedCase(status=status, status_since=since, **imported),
        **fields,
    )


def emails(effects: list[Any]) -> list[str]:
    return [str(e.template) for e in effects if isinstance(e, Notify)]


def moved_in(status: str, age: timedelta, **imported: Any) -> Any:
    return imported_outcome(case(status, NOW - age, **imported), DEFAULTS, NOW)


@pytest.mark.parametrize(
    ("age", "status", "next_action", "due_in", "mail"),
    [
        # Ten days waiting: the two-week reminder in four days, not fourteen.
        (10 * DAY, "Pending Customer Response", DeadlineKind.PCR_REMINDER, 4 * DAY, []),
        # Twenty days: the reminder's moment has passed, unsent; Closing at four weeks.
        (20 * DAY, "Pending Customer Response", DeadlineKind.PCR_CLOSING, 8 * DAY, []),
        # Thirty days: Closing at once, with its notice (and never the reminder for the past).
        (30 * DAY, "Closing", DeadlineKind.CLOSING_CLOSED, 14 * DAY, ["closing"]),
    ],
)
def test_a_case_waiting_for_the_customer_moves_in_at_its_age(
    age: timedelta, status: str, next_action: DeadlineKind, due_in: timedelta, mail: list[str]
) -> None:
    outcome = moved_in("Pending Customer Response", age)
    due = next_deadline(outcome.state)
    assert outcome.state.status == status
    assert due is not None and (due.action, due.at) == (next_action, NOW + due_in)
    assert emails(outcome.effects) == mail  # no "opened" email, no reminder for the past


def test_a_closing_case_13_days_old_closes_the_next_day() -> None:
    outcome = moved_in("Closing", 13 * DAY)
    due = next_deadline(outcome.state)
    assert due is not None and (due.to, due.at) == (Status.CLOSED, NOW + DAY)
    assert emails(outcome.effects) == []


def test_a_closing_case_past_its_14_days_closes_at_once_with_the_closed_notice() -> None:
    outcome = moved_in("Closing", 20 * DAY)
    assert outcome.state.status == Status.CLOSED and outcome.state.closed_at == NOW
    assert emails(outcome.effects) == ["closed"]


def test_a_work_plan_seven_months_old_is_reassessed_next_at_nine_months() -> None:
    since = datetime(2026, 5, 7, 9, 0, tzinfo=UTC)
    outcome = imported_outcome(case("Pending Work Plan", since), DEFAULTS, NOW)
    due = next_deadline(outcome.state)
    assert due is not None and due.action is DeadlineKind.WORK_PLAN_REVIEW
    assert due.at == datetime(2027, 2, 7, 9, 0, tzinfo=UTC)  # the reviews at 3 and 6 months unsent
    assert emails(outcome.effects) == []


def test_a_work_plan_25_months_old_goes_to_closing_at_once() -> None:
    outcome = moved_in("Pending Work Plan", 25 * 31 * DAY)
    assert outcome.state.status == Status.CLOSING
    assert emails(outcome.effects) == ["closing"]


def test_month_ends_clamp_as_the_guide_counts_months() -> None:
    # In Pending Work Plan since the last day of January: reviewed on the last day of April.
    since = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
    state = imported_outcome(
        case("Pending Work Plan", since), DEFAULTS, datetime(2026, 2, 1, tzinfo=UTC)
    ).state
    due = next_deadline(state)
    assert due is not None and due.at == datetime(2026, 4, 30, 9, 0, tzinfo=UTC)
    # Testing a fix since 31 March: closed after eleven months, on the last day of February.
    testing = case("Pending Customer Testing", datetime(2025, 3, 31, 9, 0, tzinfo=UTC))
    state = imported_outcome(testing, DEFAULTS, datetime(2025, 4, 1, tzinfo=UTC)).state
    due = next_deadline(state)
    assert due is not None and due.at == datetime(2026, 2, 28, 9, 0, tzinfo=UTC)


def test_pending_release_registers_with_its_release_and_its_clock_starts_at_the_ship() -> None:
    waiting = moved_in("Pending Release", 40 * DAY, release_id="2027.01")
    assert waiting.state.status == Status.PENDING_RELEASE
    assert next_deadline(waiting.state) is None  # until the release ships
    assert [e.release_id for e in waiting.effects if isinstance(e, Register)] == ["2027.01"]
    shipped = moved_in(
        "Pending Release", 40 * DAY, release_id="2026.11", release_shipped_at=NOW - 20 * DAY
    )
    assert shipped.state.status == Status.CLOSING  # 14 days after the ship have passed
    assert not [e for e in shipped.effects if isinstance(e, Register)]
    assert emails(shipped.effects) == ["closing"]


def test_the_owner_tier_follows_the_status() -> None:
    assert moved_in("Tier 2 Analysis", DAY).state.owner_tier == 2
    assert moved_in("Development", DAY, owner_tier=2).state.owner_tier == 2
    assert moved_in("Development", DAY).state.owner_tier == 1


@pytest.mark.parametrize(
    ("status", "fields", "reason"),
    [
        ("Pending Work Plan", {"priority": "high"}, "only for normal or low priority"),
        ("Pending Work Plan", {"affects_multiple_institutions": True}, "several institutions"),
        ("Pending Release", {}, "needs the release_id"),
        ("Tier 2 Analysis", {"owner_tier": 1}, "owned by Tier 2"),
        ("Development", {"release_id": "2027.01"}, "a release_id is for Pending Release"),
    ],
)
def test_a_starting_point_the_guide_cannot_hold_is_refused_with_the_reason(
    status: str, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Rejection, match=reason):
        import_case(case(status, NOW - DAY, **fields), NOW)


def test_a_date_in_the_future_is_refused() -> None:
    with pytest.raises(Rejection, match="in the future"):
        import_case(case("Tier 1 Analysis", NOW + DAY), NOW)


def test_only_the_importer_moves_a_case_in_and_it_opens_nothing_else() -> None:
    staff = Actor(role="tier1", name="Tom")
    with pytest.raises(Rejection, match="opened by the importer"):
        import_case(case("Tier 1 Analysis", NOW - DAY, opened_by=staff), NOW)
    with pytest.raises(Rejection, match="customer or tier1"):
        from workflows.lifecycle import open_case

        plain = case("Tier 1 Analysis", NOW - DAY).model_copy(update={"imported": None})
        open_case(plain, NOW)


@pytest.mark.parametrize("status", ["New", "Closed"])
def test_new_and_closed_are_no_starting_point(status: str) -> None:
    with pytest.raises(ValidationError, match="open and past New"):
        case(status, NOW - DAY)


def test_the_other_help_desk_s_history_is_kept_in_the_store_once() -> None:
    since = NOW - 3 * DAY
    history = [
        {"from_status": None, "to_status": "New", "at": NOW - 9 * DAY},
        {"from_status": "New", "to_status": "Tier 1 Analysis", "at": NOW - 8 * DAY},
        {"from_status": "Tier 1 Analysis", "to_status": "Pending Customer Response", "at": since},
    ]
    outcome = moved_in("Pending Customer Response", 3 * DAY, history=history, source="ZD-4711")
    rows = [e.history for e in outcome.effects if isinstance(e, Persist) and e.history]
    assert [(r.from_status, r.to_status, r.at) for r in rows] == [
        (None, Status.NEW, NOW - 9 * DAY),
        (Status.NEW, Status.TIER1_ANALYSIS, NOW - 8 * DAY),
        (Status.TIER1_ANALYSIS, Status.PENDING_CUSTOMER_RESPONSE, since),
    ]
    assert [r.seq for r in rows] == [1, 2, 3]
    assert "imported from ZD-4711" in (rows[-1].note or "")
    assert outcome.state.case.imported is None  # not carried for the case's life
    assert MessageTemplate.OPENED not in emails(outcome.effects)


def test_a_history_entry_after_the_status_since_is_refused() -> None:
    with pytest.raises(ValidationError, match="after status_since"):
        case("Tier 1 Analysis", NOW - DAY, history=[{"to_status": "New", "at": NOW}])
