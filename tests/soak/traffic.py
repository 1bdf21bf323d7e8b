"""Seeded random traffic: each case's script (what is sent, when, and how) drawn up front.

The scripts come from a dry run of each case through the pure core on a virtual clock (its
deadlines acting on time, releases shipping at their offsets), so most events are legal when
they are sent, some are deliberately not (a wrong role, a wrong status), and some repeat an
earlier event id. The real run takes them at the same offsets; where faults moved the case's
clock, an event may be refused instead: the check reads what the case actually took.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from workflows import lifecycle
from workflows.contract import (
    Actor,
    ApplyPolicy,
    CaseInput,
    CustomerReply,
    HandoffReason,
    PolicyOverrides,
    PolicySettings,
    ReleaseShipped,
    Status,
    TierHandoff,
    TransitionRequest,
)

INSTITUTION = "Alma University"
ACTORS = {
    "customer": Actor(role="customer", name="Ann Reader", institution=INSTITUTION),
    "tier1": Actor(role="tier1", name="Tom One"),
    "tier2": Actor(role="tier2", name="Tess Two"),
    "development": Actor(role="development", name="Dev Eloper"),
    "product_manager": Actor(role="product_manager", name="Pam Manager"),
    "kb_team": Actor(role="kb_team", name="Kay Bee"),
}
SIGNAL_NAMES: dict[type[BaseModel], str] = {
    TransitionRequest: "transition",
    CustomerReply: "customer_reply",
    TierHandoff: "tier_handoff",
    ApplyPolicy: "apply_policy",
}
# The worker's policy settings in the soak (CASES_POLICY_SHORTEST=1s, no default policy).
SETTINGS = PolicySettings.model_validate({"shortest": "1s"})
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)  # the dry run's virtual clock starts here


def seconds_policy(rng: random.Random) -> dict[str, str]:
    """A staff opener's policy of seconds: deadlines fire during the run."""
    reminder = rng.randint(2, 8)
    return {
        "pcr_reminder": f"{reminder}s",
        "pcr_closing": f"{reminder + rng.randint(2, 10)}s",
        "closing_closed": f"{rng.randint(3, 15)}s",
        "work_plan_review": f"{rng.randint(3, 8)}s",
        "work_plan_expiry": f"{rng.randint(10, 25)}s",
        "release_closing": f"{rng.randint(8, 25)}s",
        "testing_closed": f"{rng.randint(8, 30)}s",
    }


@dataclass
class Step:
    at: float  # seconds from the start of the soak
    event: BaseModel
    via: str  # "signal" or "update"
    intent: str  # legal, illegal, duplicate, policy


@dataclass
class Script:
    number: str
    case: CaseInput
    open_at: float
    steps: list[Step] = field(default_factory=list)


@dataclass
class Release:
    release_id: str
    ship_at: float


def releases(rng: random.Random, count: int, window: float) -> list[Release]:
    return [
        Release(f"2030.{k + 1}", round(rng.uniform(0.1, 1.0) * window, 1)) for k in range(count)
    ]


def scripts(
    seed: int, cases: int, open_window: float, send_until: float, ships: list[Release]
) -> list[Script]:
    return [
        script(random.Random(f"{seed}:{i}"), seed, i, open_window, send_until, ships)
        for i in range(cases)
    ]


def script(
    rng: random.Random,
    seed: int,
    i: int,
    open_window: float,
    send_until: float,
    ships: list[Release],
) -> Script:
    number = f"SOAK{seed}-{i:04d}"
    staff = rng.random() < 0.9
    case = CaseInput.model_validate(
        {
            "case_number": number,
            "institution": INSTITUTION,
            "product": "Alma",
            "priority": rng.choice(["normal", "low", "high"]),
            "title": f"Soak case {i}",
            "contact_email": f"{number.lower()}@alma.example",
            "opened_by": ACTORS["tier1"] if staff else ACTORS["customer"],
            "policy": seconds_policy(rng) if staff else None,
        }
    )
    open_at = round(rng.uniform(0, open_window), 2)
    out = Script(number, case, open_at)
    state = lifecycle.open_case(case, EPOCH + timedelta(seconds=open_at)).state
    state = lifecycle.resolve_policy(state, SETTINGS, EPOCH).state
    at = open_at
    sent: list[BaseModel] = []
    for k in range(rng.randint(3, 16)):
        at += rng.expovariate(1 / 6.0)  # about six seconds apart
        if at > send_until:
            break
        now = EPOCH + timedelta(seconds=at)
        state = _advance(state, now, ships)
        if state.status is Status.CLOSED:
            break
        roll = rng.random()
        with_id = [e for e in sent if getattr(e, "event_id", None)]
        if roll < 0.10 and with_id:
            event, intent = rng.choice(with_id), "duplicate"
        elif roll < 0.16:
            event, intent = _policy_change(rng, f"{number}-{k}"), "policy"
        elif roll < 0.30:
            event, intent = _illegal(rng, state, f"{number}-{k}"), "illegal"
        else:
            legal = _legal(rng, state, f"{number}-{k}", ships)
            event, intent = (legal, "legal") if legal else (_illegal(rng, state, ""), "illegal")
        out.steps.append(Step(round(at, 2), event, rng.choice(["signal"] * 3 + ["update"]), intent))
        sent.append(event)
        if lifecycle.is_duplicate(state, getattr(event, "event_id", None)):
            continue
        with contextlib.suppress(lifecycle.Rejection):
            state = lifecycle.decide(state, event, now).state  # type: ignore[arg-type]
    return out


def _advance(state: lifecycle.CaseState, now: datetime, ships: list[Release]) -> Any:
    """The dry run's clock: releases ship and deadlines act up to ``now``."""
    for release in ships:
        shipped = EPOCH + timedelta(seconds=release.ship_at)
        if state.release_id == release.release_id and shipped <= now:
            event = ReleaseShipped(release_id=release.release_id, shipped_at=shipped)
            with contextlib.suppress(lifecycle.Rejection):
                state = lifecycle.decide(state, event, now).state
    while state.status is not Status.CLOSED and (due := lifecycle.next_deadline(state)):
        if due.at > now:
            break
        try:
            state = lifecycle.decide(state, lifecycle.Due(due), due.at).state
        except lifecycle.Rejection:
            break
    return state


def _maybe_id(rng: random.Random, event_id: str) -> str | None:
    return event_id if event_id and rng.random() < 0.7 else None


def _transition(
    rng: random.Random, target: Status, actor: Actor, eid: str | None, ships: list[Release]
) -> TransitionRequest:
    release = rng.choice(ships).release_id if target is Status.PENDING_RELEASE else None
    return TransitionRequest(to=target, actor=actor, release_id=release, event_id=eid)


def _others(rng: random.Random, eid: str | None) -> list[BaseModel]:
    """Replies and handoffs, each in the role that may send it."""
    return [
        CustomerReply(text="Here is what you asked for.", actor=ACTORS["customer"], event_id=eid),
        TierHandoff(
            to_tier=2, reason=rng.choice(list(HandoffReason)), actor=ACTORS["tier1"], event_id=eid
        ),
        TierHandoff(to_tier=1, reason="answered", actor=ACTORS["tier2"], event_id=eid),
    ]


def _accepts(state: lifecycle.CaseState, event: BaseModel) -> bool:
    try:
        lifecycle.decide(state, event, state.status_since)  # type: ignore[arg-type]
    except lifecycle.Rejection:
        return False
    return True


def _legal(
    rng: random.Random, state: lifecycle.CaseState, event_id: str, ships: list[Release]
) -> BaseModel | None:
    eid = _maybe_id(rng, event_id)
    moves: list[BaseModel] = []
    for rule in lifecycle.rules_from(state.status, lifecycle.Via.TRANSITION):
        for target in sorted(rule.targets):
            for role in sorted(rule.roles):
                event = _transition(rng, target, ACTORS[str(role)], eid, ships)
                if _accepts(state, event):
                    moves.append(event)
    others = [e for e in _others(rng, eid) if _accepts(state, e)]
    moves += [e for e in others if isinstance(e, TierHandoff)]
    # Moves more often than comments (replies are legal almost everywhere), and the long ways
    # (deadlines, Tier 2, releases) more often than resolving at once.
    if moves and rng.random() < 0.85:
        return rng.choices(moves, [_weight(e) for e in moves])[0]
    legal = moves + others
    return rng.choice(legal) if legal else None


WEIGHTS = {
    Status.CLOSING: 0.3,
    Status.CLOSED: 0.3,
    Status.PENDING_CUSTOMER_RESPONSE: 2.0,
    Status.DEVELOPMENT: 3.0,
    Status.PENDING_RELEASE: 4.0,
    Status.PENDING_WORK_PLAN: 3.0,
    Status.PENDING_CUSTOMER_TESTING: 4.0,
}


def _weight(event: BaseModel) -> float:
    if isinstance(event, TransitionRequest):
        return WEIGHTS.get(event.to, 1.0)
    return 2.0  # a handoff


def _illegal(rng: random.Random, state: lifecycle.CaseState, event_id: str) -> BaseModel:
    """A wrong role or a wrong status; a handful of draws find one."""
    eid = _maybe_id(rng, event_id)
    ships = [Release("2030.1", 0.0)]
    for _ in range(50):
        if rng.random() < 0.8:
            target = rng.choice(list(Status))
            event: BaseModel = _transition(
                rng, target, rng.choice(list(ACTORS.values())), eid, ships
            )
        else:
            event = rng.choice(_others(rng, eid))
        if not _accepts(state, event):
            return event
    return TransitionRequest(to=Status.NEW, actor=ACTORS["customer"], event_id=eid)


def _policy_change(rng: random.Random, event_id: str) -> ApplyPolicy:
    """A staff policy change; a customer's, or one below the shortest span, is refused."""
    reminder = rng.randint(2, 8)
    fields = {"pcr_reminder": f"{reminder}s", "pcr_closing": f"{reminder + rng.randint(1, 8)}s"}
    if rng.random() < 0.5:
        fields = {"closing_closed": f"{rng.randint(3, 15)}s"}
    actor = ACTORS[rng.choice(["tier1", "tier2", "tier2", "customer"])]
    return ApplyPolicy(
        policy=PolicyOverrides.model_validate(fields),
        actor=actor,
        reason="soak: deadlines moved",
        event_id=_maybe_id(rng, event_id),
    )
