"""The custom search attributes ops filter cases by in the Temporal UI."""

from __future__ import annotations

from datetime import datetime

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from workflows.contract import CaseRecord

CASE_STATUS = SearchAttributeKey.for_keyword("CaseStatus")
CASE_PRIORITY = SearchAttributeKey.for_keyword("CasePriority")
CASE_INSTITUTION = SearchAttributeKey.for_keyword("CaseInstitution")
CASE_PRODUCT = SearchAttributeKey.for_keyword("CaseProduct")
CASE_RELEASE = SearchAttributeKey.for_keyword("CaseRelease")
CASE_OWNER_TIER = SearchAttributeKey.for_keyword("CaseOwnerTier")
CASE_NEXT_DEADLINE = SearchAttributeKey.for_datetime("CaseNextDeadline")

ALL_KEYS: tuple[SearchAttributeKey, ...] = (
    CASE_STATUS,
    CASE_PRIORITY,
    CASE_INSTITUTION,
    CASE_PRODUCT,
    CASE_RELEASE,
    CASE_OWNER_TIER,
    CASE_NEXT_DEADLINE,
)


def case_values(case: CaseRecord, next_deadline: datetime | None) -> dict[str, object]:
    """Each attribute's value for a case; ``None`` means unset (no release, no deadline)."""
    return {
        CASE_STATUS.name: str(case.status),
        CASE_PRIORITY.name: str(case.priority),
        CASE_INSTITUTION.name: case.institution,
        CASE_PRODUCT.name: case.product,
        CASE_RELEASE.name: case.release_id,
        CASE_OWNER_TIER.name: str(case.owner_tier),
        CASE_NEXT_DEADLINE.name: next_deadline,
    }


def updates(values: dict[str, object], before: dict[str, object]) -> list[SearchAttributeUpdate]:
    """Only the attributes that changed, so an event that moves nothing writes nothing."""
    out: list[SearchAttributeUpdate] = []
    for key in ALL_KEYS:
        value = values[key.name]
        if key.name in before and before[key.name] == value:
            continue
        out.append(key.value_unset() if value is None else key.value_set(value))
    return out


def typed(values: dict[str, object]) -> TypedSearchAttributes:
    """The same values as a start option, so a case is searchable from its first instant."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(key, values[key.name])
            for key in ALL_KEYS
            if values[key.name] is not None
        ]
    )


def current(attributes: TypedSearchAttributes) -> dict[str, object]:
    """The case's attributes as the run starts (set by the starter, or carried over from the run
    before a continue-as-new; an absent one is unset), so only what differs is upserted."""
    return {key.name: attributes.get(key) for key in ALL_KEYS}
