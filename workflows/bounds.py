"""Byte budgets of what a case carries into its next run (continue-as-new).

Temporal refuses a continue-as-new input over 2 MiB (and warns over 512 KiB); a case must stay
under 512 KiB with every carried list and field at its worst. Tails are trimmed to byte
budgets, newest kept (the store has the full history); the pending effects are never trimmed:
a run whose pending effects exceed their budget holds its continue-as-new until they drain.
``tests/test_bounds.py`` proves the sum at the worst case.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from workflows.lifecycle import CaseState

T = TypeVar("T")

MAX_CARRIED_BYTES = 512 * 1024
HISTORY_BYTES = 96 * 1024
REJECTED_BYTES = 48 * 1024
RECENT_BYTES = 16 * 1024
SEEN_EVENT_ID_BYTES = 48 * 1024
# Pending effects: a mail or database outage longer than the drain wait leaves them pending.
EFFECT_BYTES = 224 * 1024


def model_bytes(model: BaseModel) -> int:
    return len(model.model_dump_json().encode("utf-8", "surrogatepass")) + 1  # and a comma


def text_bytes(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")) + 1


def newest_within(items: Sequence[T], size: Callable[[T], int], budget: int) -> list[T]:
    """The newest items (the list's end) whose sizes add up to at most ``budget`` bytes."""
    used, start = 0, len(items)
    while start > 0 and used + (cost := size(items[start - 1])) <= budget:
        used += cost
        start -= 1
    return list(items[start:])


def effects_bytes(effects: Sequence[BaseModel]) -> int:
    return sum(model_bytes(e) for e in effects)


def effects_fit(effects: Sequence[BaseModel]) -> bool:
    return effects_bytes(effects) <= EFFECT_BYTES


def fit_state(state: CaseState) -> CaseState:
    """``state`` with each tail trimmed to its byte budget (unchanged if all fit)."""
    trimmed: dict[str, list[Any]] = {
        "history": newest_within(state.history, model_bytes, HISTORY_BYTES),
        "rejected": newest_within(state.rejected, model_bytes, REJECTED_BYTES),
        "recent": newest_within(state.recent, text_bytes, RECENT_BYTES),
        "seen_event_ids": newest_within(state.seen_event_ids, text_bytes, SEEN_EVENT_ID_BYTES),
    }
    changed = {k: v for k, v in trimmed.items() if len(v) != len(getattr(state, k))}
    return state.model_copy(update=changed) if changed else state
