"""What the case shows: its snapshot, the Temporal UI's details, the deadlines ahead, and the
one-line answer to a rejected update. Views read the state; they never change it."""

from __future__ import annotations

from workflows.contract import Deadline, Snapshot
from workflows.lifecycle.deadlines import describe, next_deadline
from workflows.lifecycle.record import shared_fields
from workflows.lifecycle.reducer import decide, excerpt
from workflows.lifecycle.state import CaseState, Due, Rejection


def snapshot(state: CaseState) -> Snapshot:
    return Snapshot(
        **shared_fields(state),
        release_shipped_at=state.release_shipped_at,
        next_deadline=next_deadline(state),
        timeline=timeline(state),
        history=state.history,
        rejected=state.rejected,
        policy=state.policy,
        policy_changes=state.policy_changes,
        undelivered=state.undelivered,
    )


def timeline(state: CaseState, limit: int = 32) -> list[Deadline]:
    """What happens if nobody acts: each deadline in turn, applied through ``decide`` itself."""
    ahead: list[Deadline] = []
    while len(ahead) < limit and (due := next_deadline(state)) is not None:
        ahead.append(due)
        try:
            state = decide(state, Due(due), due.at).state
        except Exception:  # a view: what the core cannot foresee ends it; a case always answers
            break
    return ahead


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
        lines.append(_tail_line("rejected events", len(state.rejected), last.reason, last.message))
    if state.undelivered:
        refused = state.undelivered[-1]
        count = len(state.undelivered)
        lines.append(_tail_line("undelivered email", count, refused.template, refused.reason))
    lines += ["", "**Last events**", "", *[f"- {line}" for line in reversed(state.recent[-5:])]]
    return "\n".join(lines)


def _tail_line(what: str, count: int, kind: str, text: str) -> str:
    return f"- {what}: {count} (last: {kind}: {excerpt(text, 120)})"


def describe_rejection(state: CaseState, asked: str, rejection: Rejection) -> str:
    """The one-line error an update answers with: current status, what was asked, and why not."""
    return (
        f"case {state.case.case_number} is in {state.status!s}; "
        f"{asked} rejected: {rejection.message}"
    )
