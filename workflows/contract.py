"""The wire contract: every name and payload that crosses a boundary.

The workflow types, ids, task queue, signal/update/query and activity names, and every payload
as a pydantic model. One module imported by the workflow, the activities, the CLI and other
Python systems. Field names are exactly those of SPEC.md; everything is plain JSON
(``json/plain``) on the wire, and instants are ISO-8601 strings with a UTC offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from workflows.calendar import LONGEST_SPAN, SHORTEST_SPAN, Span, SpanField
from workflows.mailbox import one_mailbox

# ---- names other systems depend on: each written here once, never changed ------------------

TASK_QUEUE = "support-cases"  # the default; a deployment sets CASES_TASK_QUEUE
CASE_WORKFLOW = "SupportCase"
RELEASE_WORKFLOW = "Release"
RELEASE_TRAIN_WORKFLOW = "ReleaseTrain"

# Workflow ids: ``case-<case_number>`` and ``release-<release_id>``.
CASE_ID_PREFIX = "case-"
RELEASE_ID_PREFIX = "release-"


def case_workflow_id(case_number: str) -> str:
    return f"{CASE_ID_PREFIX}{case_number}"


def release_workflow_id(release_id: str) -> str:
    return f"{RELEASE_ID_PREFIX}{release_id}"


class HandlerName(StrEnum):
    """The signals, updates and queries of ``SupportCase`` and ``Release``."""

    # SupportCase: events (each a signal, and all but release_shipped an update too)
    CUSTOMER_REPLY = "customer_reply"
    TIER_HANDOFF = "tier_handoff"
    TRANSITION = "transition"
    RELEASE_SHIPPED = "release_shipped"
    APPLY_POLICY = "apply_policy"
    # SupportCase: the worker's mail relay tells a case that the mail server refused one of its
    # messages for good (a signal; kept in the snapshot's ``undelivered``, no status change)
    MAIL_UNDELIVERED = "mail_undelivered"
    # SupportCase: queries
    SNAPSHOT = "snapshot"
    POLICY_PREVIEW = "policy_preview"
    # Release: signals (reschedule is an update too) and its query
    REGISTER_CASE = "register_case"
    RESCHEDULE = "reschedule"
    SHIP_NOW = "ship_now"
    STATUS = "status"


class ActivityName(StrEnum):
    """The activity types the workflows call and the worker registers."""

    # The case's two local activities: what the worker's policy settings are when a case opens,
    # and the record of its decisions (status rows, outbox messages, release registrations).
    POLICY_SETTINGS = "policy_settings"
    RECORD = "record"
    RELEASE_BACKLOG_ADD = "release_backlog_add"
    RELEASE_BACKLOG_LOAD = "release_backlog_load"
    OPEN_RELEASE = "open_release"
    FAN_OUT_RELEASE = "fan_out_release"


# A release's workflow and its fan-out go ahead of everything else on the task queue (1 = first,
# the default is 3): each fan-out batch makes a thousand cases react, and the next batch must not
# wait behind the reactions to the last one. A plain number: the contract imports no Temporal.
RELEASE_PRIORITY_KEY = 1  # workflows.effects.RELEASE_PRIORITY

# Hostile-input bounds: a raw event payload larger than this is rejected before decoding.
MAX_EVENT_BYTES = 64 * 1024


class Status(StrEnum):
    NEW = "New"
    TIER1_ANALYSIS = "Tier 1 Analysis"
    PENDING_CUSTOMER_RESPONSE = "Pending Customer Response"
    WAITING_FOR_PROCESS = "Waiting for Process"
    TIER2_NEW = "Tier 2 New"
    TIER2_ANALYSIS = "Tier 2 Analysis"
    TIER2_W4I = "Tier 2 W4I"
    TIER1_ANSWER_TO_TIER2 = "Tier 1 Answer to Tier 2"
    TIER2_CLOSED = "Tier 2 Closed"
    PENDING_WORK_PLAN = "Pending Work Plan"
    DEVELOPMENT = "Development"
    PENDING_RELEASE = "Pending Release"
    PENDING_CUSTOMER_TESTING = "Pending Customer Testing"
    SHARED_WITH_PQ = "Shared with PQ"
    WAITING_FOR_VENDOR_INPUT = "Waiting for Vendor Input"
    PRODUCT_MANAGER_REVIEW = "Product Manager Review"
    CLOSING = "Closing"
    CLOSED = "Closed"


class Role(StrEnum):
    CUSTOMER = "customer"
    TIER1 = "tier1"
    TIER2 = "tier2"
    DEVELOPMENT = "development"
    PRODUCT_MANAGER = "product_manager"
    KB_TEAM = "kb_team"
    SYSTEM = "system"
    # Opens a case moved in from another help desk (``CaseInput.imported``), nothing else.
    IMPORTER = "importer"


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class HandoffReason(StrEnum):
    CONSULT = "consult"
    DEEPER_ANALYSIS = "deeper_analysis"
    DEFECT_VERIFICATION = "defect_verification"


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# An aware instant, normalised to UTC and written with an explicit "+00:00" offset.
Instant = Annotated[
    AwareDatetime,
    AfterValidator(_utc),
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
]
CaseNumber = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
ReleaseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
]


def _one_mailbox(value: str) -> str:
    # Each message has exactly one recipient: a list, a group or an encoded-word is refused here.
    one_mailbox(value)
    return value


# The contact: one mailbox (workflows.mailbox), as the notify activity will parse it.
ContactEmail = Annotated[Email, AfterValidator(_one_mailbox)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
Note = Annotated[str, StringConstraints(max_length=2_000)]
# A signed token vouching for the event's actor (workflows/trust.py; README "Trust model").
Proof = Annotated[str, StringConstraints(min_length=1, max_length=4_096)]


class Wire(BaseModel):
    """Base of every inbound payload: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Wire):
    role: Role
    name: Name
    institution: Name | None = None


def _within_longest(policy: BaseModel) -> None:
    """Every given span is at most LONGEST_SPAN: no deadline can overflow the calendar."""
    for field in type(policy).model_fields:
        span = getattr(policy, field)
        if span is not None and not span.at_most(LONGEST_SPAN):
            raise ValueError(
                f"{field} is {span}; a deadline lies between {SHORTEST_SPAN.words()} "
                f"and {LONGEST_SPAN.words()} (10 years)"
            )


class DeadlinePolicy(Wire):
    """Every deadline of the guide, as a span counted from the case's entry into the status."""

    pcr_reminder: SpanField = Field(default="14d", validate_default=True)
    pcr_closing: SpanField = Field(default="28d", validate_default=True)
    closing_closed: SpanField = Field(default="14d", validate_default=True)
    work_plan_review: SpanField = Field(default="3mo", validate_default=True)
    work_plan_expiry: SpanField = Field(default="24mo", validate_default=True)
    release_closing: SpanField = Field(default="14d", validate_default=True)
    testing_closed: SpanField = Field(default="11mo", validate_default=True)

    @model_validator(mode="after")
    def _bounded(self) -> DeadlinePolicy:
        _within_longest(self)
        probe = datetime(2001, 1, 31, tzinfo=UTC)
        if self.pcr_reminder.after(probe) >= self.pcr_closing.after(probe):
            raise ValueError(
                f"pcr_reminder ({self.pcr_reminder}) must come before "
                f"pcr_closing ({self.pcr_closing})"
            )
        return self

    def with_fields(self, overrides: PolicyOverrides | None) -> DeadlinePolicy:
        """This policy with the fields ``overrides`` gives replaced (validated again)."""
        if overrides is None:
            return self
        given = overrides.given()
        return DeadlinePolicy.model_validate({**self.model_dump(), **given}) if given else self


class PolicyOverrides(Wire):
    """Some fields of a deadline policy: what an opener or ``apply_policy`` gives; the rest stay."""

    pcr_reminder: SpanField | None = None
    pcr_closing: SpanField | None = None
    closing_closed: SpanField | None = None
    work_plan_review: SpanField | None = None
    work_plan_expiry: SpanField | None = None
    release_closing: SpanField | None = None
    testing_closed: SpanField | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_policy(cls, data: Any) -> Any:
        # A whole policy gives every field (a Python caller may pass a ``DeadlinePolicy``).
        return data.model_dump() if isinstance(data, DeadlinePolicy) else data

    @model_validator(mode="after")
    def _bounded(self) -> PolicyOverrides:
        _within_longest(self)
        return self

    def given(self) -> dict[str, Span]:
        return {
            name: span
            for name in type(self).model_fields
            if (span := getattr(self, name)) is not None
        }


class ImportedHistoryEntry(Wire):
    """A status change the other help desk recorded: kept in the case store, not replayed."""

    from_status: Status | None = None
    to_status: Status
    at: Instant


# Earlier status changes an imported case may bring along.
IMPORTED_HISTORY = 200


class ImportedCase(Wire):
    """A case moved in from another help desk, already in ``status`` since ``status_since``:
    every deadline counts from there, as if the case had entered the status then."""

    status: Status
    status_since: Instant
    owner_tier: Literal[1, 2] | None = None  # default: from the status (Tier 2's are 2), else 1
    release_id: ReleaseId | None = None  # Pending Release, Pending Customer Testing
    release_shipped_at: Instant | None = None
    opened_at: Instant | None = None  # default: status_since
    history: Annotated[list[ImportedHistoryEntry], Field(max_length=IMPORTED_HISTORY)] = Field(
        default_factory=list
    )
    # The other help desk's id of the ticket, say.
    source: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None

    @model_validator(mode="after")
    def _a_starting_point(self) -> ImportedCase:
        if self.status in (Status.NEW, Status.CLOSED):
            raise ValueError(f"an imported case is open and past New, not {self.status}")
        if self.opened_at is not None and self.opened_at > self.status_since:
            raise ValueError("opened_at comes after status_since")
        if self.release_shipped_at is not None and self.release_id is None:
            raise ValueError("release_shipped_at needs the release_id")
        later = [h for h in self.history if h.at > self.status_since]
        if later:
            raise ValueError(f"a history entry ({later[0].at.isoformat()}) is after status_since")
        return self


class CaseInput(Wire):
    """Start input of ``SupportCase``; ``imported`` for a case moved in from another help desk
    (README "Moving in")."""

    case_number: CaseNumber
    institution: Name
    product: Name
    priority: Priority
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    contact_email: ContactEmail
    affects_multiple_institutions: bool = False
    references: CaseNumber | None = None
    opened_by: Actor
    # Staff may override deadlines at open; the rest come from the organisation's default.
    policy: PolicyOverrides | None = None
    proof: Proof | None = None
    imported: ImportedCase | None = None


class CustomerReply(Wire):
    text: Text
    actor: Actor
    event_id: EventId | None = None
    proof: Proof | None = None


class TierHandoff(Wire):
    to_tier: Literal[1, 2]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    note: Note = ""
    actor: Actor
    event_id: EventId | None = None
    proof: Proof | None = None

    @model_validator(mode="after")
    def _reason_fits_tier(self) -> TierHandoff:
        if self.to_tier == 2 and self.reason not in set(HandoffReason):
            allowed = ", ".join(HandoffReason)
            raise ValueError(f"a handoff to Tier 2 needs reason one of: {allowed}")
        return self


class TransitionRequest(Wire):
    to: Status
    actor: Actor
    note: Note | None = None
    release_id: ReleaseId | None = None
    event_id: EventId | None = None
    proof: Proof | None = None


class ReleaseShipped(Wire):
    release_id: ReleaseId
    shipped_at: Instant
    actor: Actor | None = None  # with trusted senders: the release's sender, and the proof
    proof: Proof | None = None


class ApplyPolicy(Wire):
    """Staff change deadlines of an open case: the fields given replace the case's."""

    policy: PolicyOverrides
    actor: Actor
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    event_id: EventId | None = None
    proof: Proof | None = None

    @model_validator(mode="after")
    def _something_given(self) -> ApplyPolicy:
        if not self.policy.given():
            raise ValueError("apply_policy needs at least one policy field")
        return self


class PolicySettings(BaseModel):
    """The worker's policy settings, read once when a case opens and kept in its history."""

    default: PolicyOverrides = Field(default_factory=PolicyOverrides)
    shortest: SpanField = Field(default=SHORTEST_SPAN, validate_default=True)


# ---- what the case shows: snapshot query, update results ------------------------------------


class DeadlineKind(StrEnum):
    PCR_REMINDER = "pcr_reminder"
    PCR_CLOSING = "pcr_closing"
    CLOSING_CLOSED = "closing_closed"
    WORK_PLAN_REVIEW = "work_plan_review"
    WORK_PLAN_EXPIRY = "work_plan_expiry"
    RELEASE_CLOSING = "release_closing"
    TESTING_CLOSED = "testing_closed"


class Deadline(BaseModel):
    at: Instant
    action: DeadlineKind
    to: Status | None = None  # the status it moves the case to, if any


class HistoryEntry(BaseModel):
    seq: int
    from_status: Status | None
    to_status: Status
    at: Instant  # when it happened (a deadline that acted late: when it acted)
    actor: Actor
    note: str | None = None
    due: Instant | None = None  # a deadline's move: the instant it was due


class PolicyFieldChange(BaseModel):
    field: str
    old: str
    new: str


class PolicyChange(BaseModel):
    """One change of a case's deadline policy: who, why, each field old -> new."""

    seq: int
    at: Instant
    actor: Actor
    reason: str
    changes: list[PolicyFieldChange]


class RejectedEvent(BaseModel):
    at: Instant
    event: str
    reason: str  # a short code, also the metric's label: wrong_role, not_allowed, malformed, ...
    message: str
    event_id: str | None = None
    excerpt: str | None = None  # the first bytes of the payload, for a malformed one


class UndeliveredMessage(BaseModel):
    """A message the mail server refused for good (a 5xx answer, an address it cannot take):
    marked undelivered in the outbox with the server's answer; the case's other mail goes on."""

    key: str  # the message's idempotency key (its Message-ID)
    template: str
    reason: str  # the server's answer, bounded (lifecycle.UNDELIVERED_REASON_BYTES)


class Snapshot(BaseModel):
    case_number: str
    status: Status
    status_since: Instant
    owner_tier: int
    priority: Priority
    institution: str
    product: str
    title: str
    release_id: str | None
    release_shipped_at: Instant | None
    next_deadline: Deadline | None
    timeline: list[Deadline]
    history: list[HistoryEntry]
    rejected: list[RejectedEvent]
    policy: DeadlinePolicy
    opened_at: Instant
    closed_at: Instant | None = None
    references: str | None = None
    policy_changes: list[PolicyChange] = Field(default_factory=list)
    undelivered: list[UndeliveredMessage] = Field(default_factory=list)


# ---- activity inputs: the effects the core asks for -------------------------------------------


class CaseRecord(BaseModel):
    """The case row as the store keeps it; ``seq`` orders writes so an old one never wins."""

    case_number: str
    institution: str
    product: str
    priority: Priority
    title: str
    contact_email: str
    status: Status
    status_since: Instant
    owner_tier: int
    release_id: str | None
    opened_at: Instant
    closed_at: Instant | None
    references: str | None
    seq: int


class HistoryRecord(HistoryEntry):
    """A history entry as the store keeps it: one row per status change of a case."""

    case_number: str


class PolicyChangeRecord(PolicyChange):
    """A policy change as the store keeps it: one row per change of a case's policy."""

    case_number: str


class MessageTemplate(StrEnum):
    OPENED = "opened"
    INFORMATION_REQUESTED = "information_requested"
    REMINDER = "reminder"
    PENDING_RELEASE = "pending_release"
    RELEASE_SHIPPED = "release_shipped"
    CLOSING = "closing"
    CLOSED = "closed"
    CUSTOMER_COMMENT = "customer_comment"
    WORK_PLAN_REVIEW = "work_plan_review"


class Persist(BaseModel):
    kind: Literal["persist"] = "persist"
    key: str
    case: CaseRecord
    history: HistoryRecord | None = None
    policy_change: PolicyChangeRecord | None = None


class Notify(BaseModel):
    """One email, written to the outbox with the decision's record and sent by the worker's mail
    relay. ``recipient`` is ``contact`` (the case's contact), ``support`` or ``development``
    (team addresses from settings, resolved when it is recorded, so a changed address needs no
    replay). ``seq`` is the case's step that sent it: the relay sends a case's mail in order."""

    kind: Literal["notify"] = "notify"
    key: str
    seq: int = 0
    template: MessageTemplate
    recipient: Literal["contact", "support", "development"]
    contact_email: str
    case_number: str
    facts: dict[str, Any] = Field(default_factory=dict)


class Register(BaseModel):
    kind: Literal["register"] = "register"
    key: str
    case_number: str
    release_id: str


Effect = Annotated[Persist | Notify | Register, Field(discriminator="kind")]


class DecidingTask(BaseModel):
    """The workflow task that asked for a record: its run, the id of its started event (the
    history's length in that task) and the workflow's clock then. A record's messages go out
    only once that task is in history as completed: a task that was lost (its worker died after
    the record) decided nothing for good, and its retry may decide otherwise."""

    run_id: str
    event_id: int
    at: datetime


class Record(BaseModel):
    """The input of the ``record`` local activity: the effects of one or more decisions, written
    in one database transaction (and the registrations sent after it). ``claim`` is set on the
    opening run's first record: the case number becomes that run's for all time (the chain's
    first run id) before anything else is written; a later run of ``case-<n>`` is refused."""

    effects: list[Effect]
    claim: str | None = None
    task: DecidingTask | None = None


class RecordResult(BaseModel):
    """``owner``: the run that holds the case number when ``claim`` was asked (this one, or
    another: then nothing was written and the run fails; "" a case opened before runs were
    recorded); None when no claim was asked."""

    owner: str | None = None


class MailUndelivered(Wire):
    """A message of this case the mail server refused for good (the relay's signal)."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    template: Annotated[str, StringConstraints(max_length=40)]
    reason: Annotated[str, StringConstraints(max_length=2_000)]
    actor: Actor | None = None  # with trusted senders: the worker's sender, and the proof
    proof: Proof | None = None


# ---- releases -------------------------------------------------------------------------------


class ReleaseInput(Wire):
    release_id: ReleaseId
    ships_at: Instant | None = None  # None: not scheduled yet; ships on ``ship_now``


class RegisterCase(Wire):
    case_number: CaseNumber
    actor: Actor | None = None  # with trusted senders: who registers it, and the proof
    proof: Proof | None = None


class Reschedule(Wire):
    ships_at: Instant
    actor: Actor | None = None  # with trusted senders: who moves it, and the proof
    proof: Proof | None = None


class ShipNow(Wire):
    """The optional payload of ``ship_now``: with trusted senders, who ships it and the proof."""

    actor: Actor | None = None
    proof: Proof | None = None
    event_id: EventId | None = None


class TrainInput(Wire):
    """The fixed input a release train's Schedule starts ``ReleaseTrain`` with."""

    train: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
    # strftime of the ship instant (UTC); literal text is kept ("alma-%Y.%m" -> "alma-2026.12")
    release_format: str = Field(default="%Y.%m", min_length=1, max_length=64)
    # The release ships this long after the schedule fires; none: it ships as it opens.
    ships_after: SpanField | None = None


class ReleaseStatus(BaseModel):
    release_id: str
    ships_at: Instant | None
    shipped_at: Instant | None
    cases_registered: int
    cases_notified: int
    cases_to_notify: int
    rejected: list[RejectedEvent] = Field(default_factory=list)  # unproven signals (trust)


class FanOut(BaseModel):
    """One batch of the release fan-out: tell these cases their release shipped."""

    release_id: str
    shipped_at: Instant
    case_numbers: list[str]


class BacklogChunk(BaseModel):
    """Registrations a release keeps in the case store rather than in its carried state: chunk
    ``chunk`` of the release's backlog, in registration order."""

    release_id: str
    chunk: int
    case_numbers: list[str] = Field(default_factory=list)


class FanOutResult(BaseModel):
    signalled: int
    skipped: int  # closed or unknown cases: moved on, nothing to tell
