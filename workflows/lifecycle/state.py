"""What a case carries: its state model, the events the reducer takes, and its answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from workflows.calendar import SHORTEST_SPAN, SpanField
from workflows.contract import (
    ApplyPolicy,
    CaseInput,
    CustomerReply,
    Deadline,
    DeadlinePolicy,
    Effect,
    HistoryEntry,
    Instant,
    PolicyChange,
    RejectedEvent,
    ReleaseShipped,
    Status,
    TierHandoff,
    TransitionRequest,
    UndeliveredMessage,
)

# How many entries of each tail the state carries; the database keeps the full history.
HISTORY_TAIL = 50
REJECTED_TAIL = 20
RECENT_TAIL = 10
SEEN_EVENT_IDS = 1_000
POLICY_CHANGES_TAIL = 10
# Messages the mail server refused for good: the last few, each reason cut to a byte bound, so
# the tail stays under UNDELIVERED_TAIL * (key + template + reason) bytes; the outbox keeps all.
UNDELIVERED_TAIL = 10
UNDELIVERED_REASON_BYTES = 300


class Rejection(Exception):
    """An event the table refuses; ``reason`` is a short code (metric label), ``message`` says
    what was asked, in which status, and why not."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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
    # When the stay's last review acted; the next is the first review instant after it under
    # the current period (a changed period or an outage never piles reviews up).
    last_review_at: Instant | None = None
    comments: int = 0
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
    # When the case moved in from another help desk (its deadlines count from before it).
    imported_at: Instant | None = None


class CarriedState(BaseModel):
    """The input of a continued run: the state and the effects not yet done, not the history.

    Defined in a module the worker's sandbox passes through, not beside the workflow: a pydantic
    model class built anew in every workflow run's sandbox costs each start, replay and cached
    case."""

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


# ---- what the shell records outside decide -------------------------------------------------------


def is_duplicate(state: CaseState, event_id: str | None) -> bool:
    return event_id is not None and event_id in state.seen_event_ids


def record_rejection(state: CaseState, rejected: RejectedEvent) -> CaseState:
    state = state.model_copy()
    state.rejected = [*state.rejected, rejected][-REJECTED_TAIL:]
    return state


def record_undelivered(state: CaseState, refused: Iterable[UndeliveredMessage]) -> CaseState:
    """Keep the messages the mail server refused for good in a bounded tail (once per key)."""
    known = {message.key for message in state.undelivered}
    new = [
        UndeliveredMessage(
            key=message.key[:200],
            template=message.template[:40],
            reason=_bounded_reason(message.reason),
        )
        for message in refused
        if message.key not in known
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
