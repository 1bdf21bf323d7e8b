"""The lifecycle as a picture: a Mermaid ``stateDiagram-v2`` and a table, both read from the
transition table (``lifecycle.rules()``).

``python -m workflows.diagram`` prints the markdown page; ``--write`` writes ``docs/lifecycle.md``;
``--check`` exits non-zero when that file is stale. Pure: no Temporal here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from workflows.contract import (
    Actor,
    CaseInput,
    DeadlineKind,
    DeadlinePolicy,
    Priority,
    Role,
    Status,
    TransitionRequest,
)
from workflows.lifecycle import OPENERS, CaseState, Rule, Via, rules

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md"
COMMAND = "python -m workflows.diagram --write"

_VIA_TAGS = {
    Via.TRANSITION: "",
    Via.CUSTOMER_REPLY: "reply",
    Via.TIER_HANDOFF: "handoff",
}

# Deadlines that act without changing the status (so they are no row of the table).
_IN_PLACE = {
    DeadlineKind.PCR_REMINDER: (
        Status.PENDING_CUSTOMER_RESPONSE,
        "after",
        "reminder email to the customer (once per stay)",
    ),
    DeadlineKind.WORK_PLAN_REVIEW: (
        Status.PENDING_WORK_PLAN,
        "every",
        "reassessment notice to Support and Development (counted from entry; none at expiry)",
    ),
}


def state_id(status: Status) -> str:
    """A Mermaid-safe id: the status in CamelCase, letters and digits only."""
    words = re.split(r"[^A-Za-z0-9]+", str(status))
    return "".join(w[:1].upper() + w[1:] for w in words if w)


def _span(kind: DeadlineKind, policy: DeadlinePolicy) -> str:
    return str(getattr(policy, kind.value))


def _when(kind: DeadlineKind, policy: DeadlinePolicy) -> str:
    span = _span(kind, policy)
    if kind is DeadlineKind.RELEASE_CLOSING:
        return f"{span} after ship"
    return f"after {span}"


_PROBE_AT = datetime(2001, 1, 1, tzinfo=UTC)


def _probes() -> list[CaseState]:
    """Case states covering what guards look at (owner tier, the status the case came from,
    whether the case's release shipped)."""
    case = CaseInput(
        case_number="probe",
        institution="probe",
        product="probe",
        priority=Priority.NORMAL,
        title="probe",
        contact_email="probe@example.org",
        opened_by=Actor(role=Role.TIER1, name="probe"),
    )
    base = CaseState(
        case=case,
        policy=DeadlinePolicy(),
        status=Status.NEW,
        status_since=_PROBE_AT,
        opened_at=_PROBE_AT,
    )
    return [
        base.model_copy(
            update={"owner_tier": tier, "came_from": came_from, "release_shipped_at": shipped}
        )
        for tier in (1, 2)
        for came_from in (None, *Status)
        for shipped in (None, _PROBE_AT)
    ]


_PROBES: list[CaseState] = []


def edge_roles(rule: Rule, src: Status, dst: Status) -> list[Role]:
    """The roles of ``rule`` that some case can use for ``src -> dst`` (guards applied)."""
    if rule.guard is None:
        return [r for r in Role if r in rule.roles]
    if not _PROBES:
        _PROBES.extend(_probes())
    out = []
    for role in Role:
        if role not in rule.roles:
            continue
        actor = Actor(role=role, name="probe")
        req = TransitionRequest(to=dst, actor=actor, release_id="probe")
        if any(
            rule.guard(p.model_copy(update={"status": src}), src, dst, actor, req) is None
            for p in _PROBES
        ):
            out.append(role)
    return out


def edge_label(rule: Rule, src: Status, dst: Status, policy: DeadlinePolicy) -> str:
    parts = [", ".join(edge_roles(rule, src, dst))]
    if rule.via is Via.DEADLINE:
        assert rule.deadline is not None
        parts.append(_when(rule.deadline, policy))
    elif tag := _VIA_TAGS[rule.via]:
        parts.append(tag)
    if rule.guard is not None:
        parts.append(rule.guard.label)
    return " · ".join(parts)


def edges(policy: DeadlinePolicy | None = None) -> list[tuple[Status, Status, str]]:
    """Every (from, to, label) of the table, in table order then the guide's status order."""
    policy = policy or DeadlinePolicy()
    return [
        (src, dst, edge_label(rule, src, dst, policy))
        for rule in rules()
        for src in Status
        if src in rule.sources
        for dst in Status
        if dst in rule.targets
    ]


def mermaid(policy: DeadlinePolicy | None = None) -> str:
    openers = ", ".join(r for r in Role if r in OPENERS)
    lines = ["stateDiagram-v2"]
    lines += [f'    state "{s}" as {state_id(s)}' for s in Status]
    lines.append(f"    [*] --> {state_id(Status.NEW)} : {openers} · open")
    lines += [f"    {state_id(a)} --> {state_id(b)} : {label}" for a, b, label in edges(policy)]
    lines.append(f"    {state_id(Status.CLOSED)} --> [*]")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "—"


def _statuses(statuses: frozenset[Status]) -> str:
    return ", ".join(f"`{s}`" for s in Status if s in statuses)


def _via(rule: Rule, policy: DeadlinePolicy) -> str:
    if rule.via is Via.DEADLINE:
        assert rule.deadline is not None
        return f"deadline `{rule.deadline}` ({_when(rule.deadline, policy)})"
    return f"`{rule.via}`"


def rules_table(policy: DeadlinePolicy | None = None) -> str:
    policy = policy or DeadlinePolicy()
    openers = ", ".join(r for r in Role if r in OPENERS)
    rows = [
        "| from | to | who | via | note |",
        "|---|---|---|---|---|",
        f"| (open) | `{Status.NEW}` | {openers} | start | the workflow starts |",
    ]
    for rule in rules():
        who = ", ".join(r for r in Role if r in rule.roles)
        note = rule.note or ("the case's own timer" if rule.via is Via.DEADLINE else "")
        rows.append(
            f"| {_statuses(rule.sources)} | {_statuses(rule.targets)} | {who} "
            f"| {_via(rule, policy)} | {_cell(note)} |"
        )
    return "\n".join(rows)


def in_place_deadlines(policy: DeadlinePolicy | None = None) -> str:
    policy = policy or DeadlinePolicy()
    in_table = {r.deadline for r in rules() if r.deadline is not None}
    lines = []
    for kind, (status, word, what) in _IN_PLACE.items():
        if kind not in in_table:
            lines.append(f"- `{kind}`: in `{status}`, {word} {_span(kind, policy)}, {what}")
    return "\n".join(lines)


def render(policy: DeadlinePolicy | None = None) -> str:
    """The whole markdown page of ``docs/lifecycle.md``."""
    return (
        "\n".join(
            [
                "# Support-case lifecycle",
                "",
                f"<!-- Generated from workflows/lifecycle/table.py (rules()) by `{COMMAND}`"
                " (make docs). Do not edit by hand. -->",
                "",
                "Every status change of a case goes through one transition table, `TABLE` in",
                "`workflows/lifecycle/table.py`; this page is generated from it (`rules()`), the",
                "rules every case runs. Edge labels name the roles that",
                "may make the move and how: a transition request (no tag), a customer",
                "`reply`, a tier `handoff`, or the case's own timer (`system · after 14d`; the",
                "durations are those of the default deadline policy, counted from the case's",
                "entry into the status). A tag such as `owner tier` marks a guarded move; the",
                "table below says what the guard asks. Anything else is rejected.",
                "",
                "```mermaid",
                mermaid(policy),
                "```",
                "",
                "## Rules",
                "",
                rules_table(policy),
                "",
                "## Deadlines that do not change the status",
                "",
                in_place_deadlines(policy),
                "",
                "A deadline that acts late (no worker ran at its instant) moves the case when it",
                "acts, and the next status counts its deadlines from then: a late Closing still",
                "gives the customer the full period after its notice. The history keeps both",
                "instants (due and acted). A reminder due together with the Closing it announces",
                "is not sent. The release clock counts from the ship instant.",
                "",
                "The owner tier is 1 when the case opens, 2 from entering `Tier 2 New`, 1",
                "again from entering `Tier 2 Closed`, and 2 from `Development` back to",
                "`Tier 2 Analysis`. `Closed` is final: a recurrence is a new case that references",
                "the closed one.",
            ]
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflows.diagram",
        description="The lifecycle diagram, from the transition table.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {DOC_PATH.name} under docs/")
    action.add_argument("--check", action="store_true", help="exit 1 when docs/ is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
    elif args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else None
        if current != text:
            print(f"{DOC_PATH} is stale: run `make docs` ({COMMAND})", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
