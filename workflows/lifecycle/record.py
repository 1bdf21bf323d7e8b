"""The case's row in the store, and the fields it shares with the snapshot. It sits below the
reducer, whose every status change persists it."""

from __future__ import annotations

from typing import Any

from workflows.contract import CaseRecord
from workflows.lifecycle.state import CaseState

# The fields a record and a snapshot both carry: the opener's facts from the case's input, the
# rest from the state, so the two projections cannot drift apart.
_INPUT_FIELDS = ("case_number", "institution", "product", "priority", "title", "references")
_STATE_FIELDS = ("status", "status_since", "owner_tier", "release_id", "opened_at", "closed_at")


def shared_fields(state: CaseState) -> dict[str, Any]:
    return {
        **{name: getattr(state.case, name) for name in _INPUT_FIELDS},
        **{name: getattr(state, name) for name in _STATE_FIELDS},
    }


def case_record(state: CaseState) -> CaseRecord:
    return CaseRecord(**shared_fields(state), contact_email=state.case.contact_email, seq=state.seq)
