"""The support-case lifecycle as data, and the pure reducer that applies it.

``decide(state, event, now)`` returns the new state and the effects to run, or a
``Rejection`` with its reason. No Temporal here: the workflow shell feeds events in and runs the
effects; tests hit this package directly. The transition table ``TABLE`` is the single source of
truth: validation, the CLI's help and the generated diagram all read it.

Layers, each importing only those above it: ``state`` (the model, events, tails), ``table``
(rules and guards), ``deadlines`` (the policy applied to a stay), ``record`` (the store's row),
``reducer`` (``decide`` and the effects), ``moving_in`` (a case imported from another help desk),
``views`` (snapshot, details, timeline).
"""

from workflows.lifecycle.deadlines import (
    ON_TIME,
    describe,
    next_deadline,
    pending_deadlines,
    settle_past,
)
from workflows.lifecycle.moving_in import import_case, imported_outcome
from workflows.lifecycle.record import case_record
from workflows.lifecycle.reducer import decide, open_case, resolve_policy
from workflows.lifecycle.state import (
    HISTORY_TAIL,
    POLICY_CHANGES_TAIL,
    RECENT_TAIL,
    REJECTED_TAIL,
    SEEN_EVENT_IDS,
    UNDELIVERED_REASON_BYTES,
    UNDELIVERED_TAIL,
    CarriedState,
    CaseState,
    Decision,
    Due,
    Event,
    Rejection,
    is_duplicate,
    record_rejection,
    record_undelivered,
)
from workflows.lifecycle.table import (
    HANDOFF_REASONS,
    OPENERS,
    POLICY_ROLES,
    TABLE,
    Rule,
    Via,
    rules,
    rules_from,
    targets,
)
from workflows.lifecycle.views import describe_rejection, details_markdown, snapshot, timeline

__all__ = [
    "HANDOFF_REASONS",
    "HISTORY_TAIL",
    "ON_TIME",
    "OPENERS",
    "POLICY_CHANGES_TAIL",
    "POLICY_ROLES",
    "RECENT_TAIL",
    "REJECTED_TAIL",
    "SEEN_EVENT_IDS",
    "TABLE",
    "UNDELIVERED_REASON_BYTES",
    "UNDELIVERED_TAIL",
    "CarriedState",
    "CaseState",
    "Decision",
    "Due",
    "Event",
    "Rejection",
    "Rule",
    "Via",
    "case_record",
    "decide",
    "describe",
    "describe_rejection",
    "details_markdown",
    "import_case",
    "imported_outcome",
    "is_duplicate",
    "next_deadline",
    "open_case",
    "pending_deadlines",
    "record_rejection",
    "record_undelivered",
    "resolve_policy",
    "rules",
    "rules_from",
    "settle_past",
    "snapshot",
    "targets",
    "timeline",
]
