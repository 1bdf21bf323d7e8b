"""The transition table and its guards: the single source of truth that validation, the CLI's
help and the generated diagram all read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from workflows.contract import (
    Actor,
    CaseInput,
    DeadlineKind,
    HandoffReason,
    Priority,
    Role,
    Status,
    TransitionRequest,
)
from workflows.lifecycle.state import CaseState, Rejection


class Via(StrEnum):
    """Which event may cause a row of the table."""

    TRANSITION = "transition"
    CUSTOMER_REPLY = "customer_reply"
    TIER_HANDOFF = "tier_handoff"
    DEADLINE = "deadline"


Check = Callable[[CaseState, Status, Status, Actor, TransitionRequest | None], str | None]


@dataclass(frozen=True)
class Guard:
    """A condition on a move: ``check`` answers why not, or None. ``label`` is its short tag on
    the diagram's edges (the rules table shows the rule's full note)."""

    label: str
    check: Check

    def __call__(
        self,
        state: CaseState,
        src: Status,
        dst: Status,
        actor: Actor,
        req: TransitionRequest | None,
    ) -> str | None:
        return self.check(state, src, dst, actor, req)


def guard(label: str) -> Callable[[Check], Guard]:
    """Make a check a ``Guard`` that carries its diagram label."""

    def labelled(check: Check) -> Guard:
        return Guard(label, check)

    return labelled


def _owner_analyst(state: CaseState) -> Role:
    """The Support analyst role of the case's owner tier."""
    return Role.TIER1 if state.owner_tier == 1 else Role.TIER2


def work_plan_refusal(case: CaseInput) -> str | None:
    """Why this case cannot wait in Pending Work Plan, or None."""
    if case.priority not in (Priority.NORMAL, Priority.LOW):
        return (
            f"Pending Work Plan is only for normal or low priority (this case is {case.priority})"
        )
    if case.affects_multiple_institutions:
        return "Pending Work Plan is not used when the issue affects several institutions"
    return None


@guard("normal/low, one institution")
def _work_plan_eligible(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    return work_plan_refusal(state.case)


@guard("with release_id")
def _needs_release(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if req is None or not req.release_id:
        return "Pending Release needs a release_id (the release the fix is embedded in)"
    return None


@guard("owner tier, with release_id")
def _owner_analyst_sets_release(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    analyst = _owner_analyst(state)
    if actor.role is not analyst:
        return (
            f"Pending Release is set by the Support analyst that owns the case: {analyst} "
            f"(owner tier is {state.owner_tier})"
        )
    return _needs_release(state, src, dst, actor, req)


@guard("after the ship")
def _release_shipped(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if state.release_shipped_at is None:
        return (
            f"release {state.release_id} has not shipped yet; "
            "there is nothing to test before it ships"
        )
    return None


@guard("came from Pending Release")
def _came_from_pending_release(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    if state.came_from is not Status.PENDING_RELEASE:
        return (
            "only a case that came to Closing from Pending Release "
            "can go to Pending Customer Testing"
        )
    return None


@guard("owner tier")
def _back_to_owner(
    state: CaseState, src: Status, dst: Status, actor: Actor, req: TransitionRequest | None
) -> str | None:
    owner = Status.TIER1_ANALYSIS if state.owner_tier == 1 else Status.TIER2_ANALYSIS
    if dst is not owner:
        return f"the case goes back to its owner tier: {owner} (owner tier is {state.owner_tier})"
    allowed = {_owner_analyst(state)}
    if src is Status.WAITING_FOR_VENDOR_INPUT:
        allowed.add(Role.KB_TEAM)
    if actor.role not in allowed:
        names = " or ".join(sorted(allowed))
        return f"only {names} may take the case back (owner tier is {state.owner_tier})"
    return None


@dataclass(frozen=True)
class Rule:
    sources: frozenset[Status]
    targets: frozenset[Status]
    roles: frozenset[Role]
    via: Via = Via.TRANSITION
    note: str = ""
    guard: Guard | None = None
    deadline: DeadlineKind | None = None
    who: str = ""  # who may, in words, where the roles alone do not say it


def _rule(
    sources: Iterable[Status], targets: Iterable[Status], roles: Iterable[Role], **fields: Any
) -> Rule:
    return Rule(frozenset(sources), frozenset(targets), frozenset(roles), **fields)


def _timer(source: Status, target: Status, kind: DeadlineKind) -> Rule:
    return _rule([source], [target], [Role.SYSTEM], via=Via.DEADLINE, deadline=kind)


RESOLVERS = (Role.TIER1, Role.TIER2, Role.DEVELOPMENT, Role.PRODUCT_MANAGER, Role.KB_TEAM)
OPENERS = frozenset({Role.CUSTOMER, Role.TIER1})
POLICY_ROLES = frozenset({Role.TIER1, Role.TIER2})
HANDOFF_REASONS = [str(reason) for reason in HandoffReason]

TABLE: tuple[Rule, ...] = (
    _rule([Status.NEW, Status.TIER2_CLOSED], [Status.TIER1_ANALYSIS], [Role.TIER1]),
    _rule(
        [Status.WAITING_FOR_PROCESS, Status.WAITING_FOR_VENDOR_INPUT],
        [Status.TIER1_ANALYSIS, Status.TIER2_ANALYSIS],
        [Role.TIER1, Role.TIER2, Role.KB_TEAM],
        note="back to the owner tier (kb_team too, from vendor input)",
        guard=_back_to_owner,
    ),
    _rule(
        [Status.TIER1_ANALYSIS, Status.TIER2_ANALYSIS],
        [Status.PENDING_CUSTOMER_RESPONSE],
        [Role.TIER1, Role.TIER2],
        note="starts the 2/4/6-week clock",
    ),
    _rule(
        [Status.PENDING_CUSTOMER_RESPONSE, Status.CLOSING, Status.PENDING_CUSTOMER_TESTING],
        [Status.WAITING_FOR_PROCESS],
        [Role.CUSTOMER],
        via=Via.CUSTOMER_REPLY,
        note=(
            "a customer reply; from Closing it reopens the case, from testing the fix did not work"
        ),
    ),
    _rule(
        [Status.TIER1_ANALYSIS],
        [Status.TIER2_NEW],
        [Role.TIER1],
        via=Via.TIER_HANDOFF,
        note="handoff; reason consult, deeper_analysis or defect_verification",
    ),
    _rule([Status.TIER2_NEW, Status.TIER1_ANSWER_TO_TIER2], [Status.TIER2_ANALYSIS], [Role.TIER2]),
    _rule([Status.TIER2_ANALYSIS], [Status.TIER2_W4I], [Role.TIER2]),
    _rule([Status.TIER2_W4I], [Status.TIER1_ANSWER_TO_TIER2], [Role.TIER1]),
    _rule(
        [Status.TIER2_ANALYSIS],
        [Status.TIER2_CLOSED],
        [Role.TIER2],
        via=Via.TIER_HANDOFF,
        note="handoff back to Tier 1",
    ),
    _rule(
        [Status.DEVELOPMENT],
        [Status.PENDING_WORK_PLAN],
        [Role.DEVELOPMENT],
        note="Development decides; normal or low priority, one institution",
        guard=_work_plan_eligible,
    ),
    _rule(
        [Status.TIER2_ANALYSIS, Status.PENDING_WORK_PLAN, Status.PRODUCT_MANAGER_REVIEW],
        [Status.DEVELOPMENT],
        [Role.TIER2, Role.DEVELOPMENT, Role.PRODUCT_MANAGER],
    ),
    _rule(
        [Status.DEVELOPMENT],
        [Status.PENDING_RELEASE],
        [Role.TIER1, Role.TIER2],
        note="the Support analyst that owns the case; needs release_id",
        who="the Support analyst that owns the case (tier2 when the owner tier is 2, else tier1)",
        guard=_owner_analyst_sets_release,
    ),
    _rule(
        [Status.DEVELOPMENT],
        [Status.TIER2_ANALYSIS],
        [Role.DEVELOPMENT],
        note="not a defect; Tier 2 becomes the owner tier",
    ),
    _rule(
        [Status.PENDING_RELEASE],
        [Status.PENDING_CUSTOMER_TESTING],
        [Role.CUSTOMER],
        note="the customer is not ready to close; only once the release shipped",
        guard=_release_shipped,
    ),
    _rule(
        [Status.CLOSING],
        [Status.PENDING_CUSTOMER_TESTING],
        [Role.CUSTOMER],
        note="only when Closing came from Pending Release",
        guard=_came_from_pending_release,
    ),
    _rule(
        [Status.TIER1_ANALYSIS, Status.TIER2_ANALYSIS],
        [Status.SHARED_WITH_PQ, Status.PRODUCT_MANAGER_REVIEW],
        [Role.TIER1, Role.TIER2],
    ),
    _rule(
        [Status.TIER1_ANALYSIS, Status.TIER2_ANALYSIS],
        [Status.WAITING_FOR_VENDOR_INPUT],
        [Role.TIER1, Role.TIER2, Role.KB_TEAM],
    ),
    _rule(
        [
            Status.TIER1_ANALYSIS,
            Status.TIER2_ANALYSIS,
            Status.TIER2_CLOSED,
            Status.WAITING_FOR_PROCESS,
            Status.DEVELOPMENT,
            Status.PRODUCT_MANAGER_REVIEW,
            Status.WAITING_FOR_VENDOR_INPUT,
            Status.SHARED_WITH_PQ,
        ],
        [Status.CLOSING],
        RESOLVERS,
        note="Support has answered (resolve)",
    ),
    _rule(
        [Status.PENDING_CUSTOMER_TESTING],
        [Status.CLOSING],
        [Role.CUSTOMER, Role.TIER1, Role.TIER2],
        note="the customer confirms the fix",
    ),
    _rule([Status.CLOSING], [Status.CLOSED], [Role.CUSTOMER], note="the customer confirms"),
    # Timer rows: only the workflow's own clock (role system) takes these.
    _timer(Status.PENDING_CUSTOMER_RESPONSE, Status.CLOSING, DeadlineKind.PCR_CLOSING),
    _timer(Status.CLOSING, Status.CLOSED, DeadlineKind.CLOSING_CLOSED),
    _timer(Status.PENDING_WORK_PLAN, Status.CLOSING, DeadlineKind.WORK_PLAN_EXPIRY),
    _timer(Status.PENDING_RELEASE, Status.CLOSING, DeadlineKind.RELEASE_CLOSING),
    _timer(Status.PENDING_CUSTOMER_TESTING, Status.CLOSED, DeadlineKind.TESTING_CLOSED),
)


def rules() -> list[Rule]:
    """The table's rows (the workflow, the diagram and the CLI all read these)."""
    return list(TABLE)


def rules_from(status: Status, via: Via | None = None) -> list[Rule]:
    return [rule for rule in TABLE if status in rule.sources and (via is None or rule.via is via)]


def targets(via: Via = Via.TRANSITION) -> list[Status]:
    """Statuses reachable by an event of this kind, in the guide's order (the CLI's choices)."""
    reachable = {target for rule in rules() if rule.via is via for target in rule.targets}
    return [status for status in Status if status in reachable]


# How a move made by the wrong kind of event is made instead.
_HOW = {
    Via.CUSTOMER_REPLY: "it happens by a customer reply (customer_reply)",
    Via.TIER_HANDOFF: "it is a tier handoff (tier_handoff with a reason)",
    Via.DEADLINE: "only the case's own deadline does that",
    Via.TRANSITION: "it is a transition request (transition)",
}


def check_move(
    state: CaseState, dst: Status, actor: Actor, via: Via, req: TransitionRequest | None
) -> None:
    """Raise ``Rejection`` unless a row of the table lets ``actor`` make this move by
    ``via``: the first reason it fails on (no row, wrong event, wrong role, every guard)."""
    src = state.status
    asked = f"{src} -> {dst}"
    rows = [rule for rule in TABLE if src in rule.sources and dst in rule.targets]
    if not rows:
        allowed = sorted(
            {
                target
                for rule in rules_from(src)
                if rule.via is not Via.DEADLINE
                for target in rule.targets
            }
        )
        hint = f"; from {src} a case can go to: {', '.join(allowed)}" if allowed else ""
        raise Rejection("not_allowed", f"{asked} is not a transition of the lifecycle{hint}")
    by_via = [rule for rule in rows if rule.via is via]
    if not by_via:
        raise Rejection("wrong_event", f"{asked} is not made by {via}: {_HOW[rows[0].via]}")
    by_role = [rule for rule in by_via if actor.role in rule.roles]
    if not by_role:
        roles = ", ".join(sorted({str(role) for rule in by_via for role in rule.roles}))
        who = "; ".join(rule.who for rule in by_via if rule.who)
        raise Rejection(
            "wrong_role",
            f"{asked} is not for {actor.role}; it is for {who or roles}",
        )
    reasons = [
        reason
        for rule in by_role
        if rule.guard and (reason := rule.guard(state, src, dst, actor, req))
    ]
    if len(reasons) == len(by_role):
        raise Rejection("guard", f"{asked} refused: {reasons[0]}")
