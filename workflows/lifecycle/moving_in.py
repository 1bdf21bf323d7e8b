"""Moving in: a case from another help desk opens in the status it is in, its clocks running.

``import_case`` is the opening of such a case: the table decides whether the case can hold the
status (a case the guide keeps out of Pending Work Plan is refused there too), the deadlines
count from ``status_since`` as if the case had entered the status then, and no "opened" email
goes out. ``resolve_policy`` then settles what the clock passed before the import (reminders
and reassessments count as done, unsent); a move that is due acts as soon as the run loop
runs, late, with its notice. ``imported_outcome`` is all of it at once (the dry run)."""

from __future__ import annotations

from datetime import datetime

from workflows import trust
from workflows.contract import (
    CaseInput,
    DeadlinePolicy,
    Effect,
    HistoryEntry,
    HistoryRecord,
    ImportedCase,
    Persist,
    PolicySettings,
    Register,
    Role,
    Status,
)
from workflows.lifecycle.deadlines import next_deadline
from workflows.lifecycle.record import case_record
from workflows.lifecycle.reducer import (
    _check_institution,
    _check_proof,
    _key,
    _record_change,
    _remember,
    _with_fields,
    decide,
    resolve_policy,
)
from workflows.lifecycle.state import HISTORY_TAIL, CaseState, Decision, Due, Rejection
from workflows.lifecycle.table import work_plan_refusal

# The owner tier each status implies; the others keep what the other help desk says (or 1).
TIER2_STATUSES = frozenset(
    {Status.TIER2_NEW, Status.TIER2_ANALYSIS, Status.TIER2_W4I, Status.TIER1_ANSWER_TO_TIER2}
)
TIER1_STATUSES = frozenset({Status.TIER1_ANALYSIS, Status.TIER2_CLOSED})
RELEASE_STATUSES = frozenset({Status.PENDING_RELEASE, Status.PENDING_CUSTOMER_TESTING})


def import_case(
    case: CaseInput,
    now: datetime,
    *,
    senders: trust.TrustedSenders | None = None,
    opened_by_run: str | None = None,
) -> Decision:
    """The opening of a case moved in; raises ``Rejection`` with the reason it cannot be."""
    imported = case.imported
    assert imported is not None
    _check_proof(senders, case, case.case_number, now)
    if case.opened_by.role is not Role.IMPORTER:
        raise Rejection(
            "wrong_role", f"an imported case is opened by the importer, not {case.opened_by.role}"
        )
    _check_institution(case, case.opened_by)
    owner_tier = _starting_point(case, imported, now)
    came_from = next(
        (h.from_status for h in reversed(imported.history) if h.to_status is imported.status),
        None,
    )
    state = CaseState(
        case=case.model_copy(update={"imported": None, "proof": None}),
        policy=_with_fields(DeadlinePolicy(), case.policy),
        status=imported.status,
        status_since=imported.status_since,
        owner_tier=owner_tier,
        opened_at=imported.opened_at or imported.status_since,
        came_from=came_from,
        release_id=imported.release_id,
        release_shipped_at=imported.release_shipped_at,
        opened_by_run=opened_by_run,
        imported_at=now,
    )
    effects: list[Effect] = []
    source = f" from {imported.source}" if imported.source else ""
    earlier = [
        h
        for h in imported.history
        if (h.to_status, h.at) != (imported.status, imported.status_since)
    ]
    for entry in earlier:  # the other help desk's record, before the status the case is in
        state.seq += 1
        kept = HistoryEntry(
            seq=state.seq,
            from_status=entry.from_status,
            to_status=entry.to_status,
            at=entry.at,
            actor=case.opened_by,
            note=f"recorded by the other help desk{source}",
        )
        state.history = [*state.history, kept][-HISTORY_TAIL:]
        effects.append(
            Persist(
                key=_key(state, "persist"),
                case=case_record(state),
                history=HistoryRecord(case_number=case.case_number, **kept.model_dump()),
            )
        )
    note = f"imported{source} on {now:%Y-%m-%d %H:%M:%S} UTC"
    last = earlier[-1].to_status if earlier else None
    _record_change(
        state, last, imported.status, case.opened_by, note, imported.status_since, effects
    )
    _remember(
        state, now, f"moved in{source}: {imported.status} since {imported.status_since:%Y-%m-%d}"
    )
    if imported.status is Status.PENDING_RELEASE and imported.release_shipped_at is None:
        assert imported.release_id is not None
        effects.append(
            Register(
                key=_key(state, "register"),
                case_number=case.case_number,
                release_id=imported.release_id,
            )
        )
    return Decision(state, effects)


def _starting_point(case: CaseInput, imported: ImportedCase, now: datetime) -> int:
    """The owner tier the case starts with, or ``Rejection``: a starting point the guide
    cannot hold for this case."""
    status = imported.status
    if imported.status_since > now:
        raise Rejection(
            "import", f"status_since {imported.status_since:%Y-%m-%d %H:%M:%S} is in the future"
        )
    for name in ("opened_at", "release_shipped_at"):
        value = getattr(imported, name)
        if value is not None and value > now:
            raise Rejection("import", f"{name} {value:%Y-%m-%d %H:%M:%S} is in the future")
    implied = 2 if status in TIER2_STATUSES else 1 if status in TIER1_STATUSES else None
    if implied is not None and imported.owner_tier not in (None, implied):
        raise Rejection(
            "import", f"{status} is owned by Tier {implied}, not Tier {imported.owner_tier}"
        )
    if status is Status.PENDING_WORK_PLAN and (reason := work_plan_refusal(case)):
        raise Rejection("guard", f"{status} refused: {reason}")
    if status is Status.PENDING_RELEASE and imported.release_id is None:
        raise Rejection("import", "Pending Release needs the release_id the fix ships in")
    if imported.release_id is not None and status not in RELEASE_STATUSES:
        raise Rejection(
            "import",
            f"a release_id is for Pending Release or Pending Customer Testing, not {status}",
        )
    return implied or imported.owner_tier or 1


def imported_outcome(case: CaseInput, settings: PolicySettings, now: datetime) -> Decision:
    """What importing ``case`` at ``now`` leads to, as the shell runs it: the opening, the
    organisation's policy, then every move its clock says is due (each with its notice)."""
    opened = import_case(case, now)
    resolved = resolve_policy(opened.state, settings, now)
    state, effects = resolved.state, [*opened.effects, *resolved.effects]
    while state.status is not Status.CLOSED and (due := next_deadline(state)) and due.at <= now:
        decision = decide(state, Due(due), now)
        state, effects = decision.state, [*effects, *decision.effects]
    return Decision(state, effects)
