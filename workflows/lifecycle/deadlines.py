"""The deadline policy applied to a stay: which deadlines are pending, and when each is due.
Deadlines are derived from the state, never stored, so they cannot drift from it."""

from __future__ import annotations

from datetime import datetime, timedelta

from workflows.calendar import Span
from workflows.contract import Deadline, DeadlineKind, Status
from workflows.lifecycle.state import CaseState

# A deadline acting within this of its instant is on time: the next stay counts from the
# deadline's own instant, so the guide's chain keeps exact instants. Later (no worker ran), the
# next stay counts from when the case really entered it.
ON_TIME = timedelta(seconds=10)


def pending_deadlines(state: CaseState) -> list[Deadline]:
    """The deadlines of the current stay that have not acted yet, soonest first."""
    policy, since = state.policy, state.status_since
    pending: list[Deadline] = []

    def move(span: Span, action: DeadlineKind, to: Status, start: datetime = since) -> Deadline:
        return Deadline(at=span.after(start), action=action, to=to)

    match state.status:
        case Status.PENDING_CUSTOMER_RESPONSE:
            if not state.reminder_sent:
                reminder = policy.pcr_reminder.after(since)
                pending.append(Deadline(at=reminder, action=DeadlineKind.PCR_REMINDER))
            pending.append(move(policy.pcr_closing, DeadlineKind.PCR_CLOSING, Status.CLOSING))
        case Status.CLOSING:
            pending.append(move(policy.closing_closed, DeadlineKind.CLOSING_CLOSED, Status.CLOSED))
        case Status.PENDING_WORK_PLAN:
            expiry = move(policy.work_plan_expiry, DeadlineKind.WORK_PLAN_EXPIRY, Status.CLOSING)
            review = policy.work_plan_review.after(since, _next_review_number(state))
            if review < expiry.at:
                pending.append(Deadline(at=review, action=DeadlineKind.WORK_PLAN_REVIEW))
            pending.append(expiry)
        case Status.PENDING_RELEASE if state.release_shipped_at is not None:
            # The clock counts from the later of shipping and entering the status, so a case
            # that enters after its release shipped starts its 14 days at once.
            start = max(state.release_shipped_at, since)
            kind = DeadlineKind.RELEASE_CLOSING
            pending.append(move(policy.release_closing, kind, Status.CLOSING, start))
        case Status.PENDING_CUSTOMER_TESTING:
            pending.append(move(policy.testing_closed, DeadlineKind.TESTING_CLOSED, Status.CLOSED))
    # Sorting is stable: a reminder due with its closing goes first.
    return sorted(pending, key=lambda deadline: deadline.at)


def next_deadline(state: CaseState) -> Deadline | None:
    pending = pending_deadlines(state)
    return pending[0] if pending else None


def _next_review_number(state: CaseState) -> int:
    """Which review (counted from entry) comes next: counted from the last one that acted under
    today's period, so every review already due acts as one."""
    if state.last_review_at is None:
        return state.reviews_done + 1
    return state.policy.work_plan_review.times_within(state.status_since, state.last_review_at) + 1


def a_late_move(state: CaseState, now: datetime) -> bool:
    """A move of this stay is due and late: it acts now too, and its notice says it all. (Within
    ON_TIME everything acts as at its instant, where the reminder came first.)"""
    return any(
        deadline.to is not None and now - deadline.at > ON_TIME
        for deadline in pending_deadlines(state)
    )


def describe(deadline: Deadline) -> str:
    return {
        DeadlineKind.PCR_REMINDER: "reminder to the customer",
        DeadlineKind.WORK_PLAN_REVIEW: "work-plan reassessment",
    }.get(deadline.action, f"→ {deadline.to}")


def settle_past(state: CaseState, now: datetime) -> CaseState:
    """A case moved in: the reminders and reassessments whose instants passed before ``now``
    count as done at their instants, unsent (a customer never gets a burst of reminders for the
    past). The moves that are due stay due: the run loop acts on them, each with its notice."""
    state = state.model_copy()
    while (due := next_deadline(state)) is not None and due.at <= now and due.to is None:
        if due.action is DeadlineKind.PCR_REMINDER:
            state.reminder_sent = True
        else:
            state.reviews_done += 1
            state.last_review_at = due.at
    return state
