"""The product's own metrics, recorded through the workflow's metric meter so they land on the
same Prometheus endpoint as the SDK's runtime metrics (and are not recorded again on replay)."""

from __future__ import annotations

from temporalio import workflow

TRANSITIONS = "case_status_transitions"
REJECTED = "case_rejected_events"
LATENESS = "case_deadline_lateness_seconds"


def transition(source: str | None, target: str) -> None:
    meter = workflow.metric_meter()
    meter.create_counter(TRANSITIONS, "Status changes of support cases, by from and to").add(
        1, {"from": source or "(open)", "to": target}
    )


# The event names a label may carry (the wire contract's signals and updates); any other name
# (a signal name is whatever a sender chose) is counted as "unknown", so senders cannot grow the
# metric's label set without bound.
KNOWN_EVENTS = frozenset(
    {"customer_reply", "tier_handoff", "transition", "release_shipped", "apply_policy"}
)
UNKNOWN_EVENT = "unknown"


def event_label(event: str) -> str:
    return event if event in KNOWN_EVENTS else UNKNOWN_EVENT


def rejected(reason: str, event: str) -> None:
    meter = workflow.metric_meter()
    meter.create_counter(REJECTED, "Events a case refused, by reason").add(
        1, {"reason": reason, "event": event_label(event)}
    )


def lateness(action: str, seconds: float) -> None:
    meter = workflow.metric_meter()
    meter.create_histogram_float(
        LATENESS, "How long after its due instant a deadline acted", "s"
    ).record(max(seconds, 0.0), {"action": action})
