"""``python -m starter policy ...``: change the deadline policy of open cases, or see a case's.

A Typer sub-app of ``starter.cli``. ``apply`` sends the ``apply_policy`` update to every open case
a visibility query finds (``--dry-run``: the ``policy_preview`` query instead, which changes
nothing); ``show`` reads one case's snapshot. CASES_DEFAULT_POLICY is for new cases only; this is
how an open case gets a new policy.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel, ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime.connection import connect
from settings import Settings
from starter.client import CaseClient, CaseRejected, quoted
from starter.output import BadInput, Code, ago, emit_json, err, handled, out, when
from workflows import lifecycle
from workflows.contract import (
    Actor,
    ApplyPolicy,
    Deadline,
    DeadlinePolicy,
    PolicyChange,
    PolicyOverrides,
    Role,
    Snapshot,
)

app = typer.Typer(
    help="The deadline policy of open cases: change it for the cases a query finds, or show "
    "one case's policy and its changes."
)

if TYPE_CHECKING:
    PolicyRole = Role
else:
    PolicyRole = StrEnum(
        "POLICY_ROLE", {r.name: r.value for r in Role if r in lifecycle.POLICY_ROLES}
    )

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
FIELDS = list(DeadlinePolicy.model_fields)

# How long one case may take to answer; no answer means no worker is running.
ANSWER_WITHIN = 30.0
# Cases asked at once: enough to keep a worker busy, few enough not to flood the frontend.
AT_ONCE = 16


async def _cases() -> CaseClient:
    return CaseClient(await connect(), Settings().task_queue)


def parse_sets(items: list[str]) -> PolicyOverrides:
    """``--set field=span`` items as the fields of a policy change; a usage error names the field
    and the bound it breaks."""
    fields: dict[str, str] = {}
    for item in items:
        name, sep, span = (part.strip() for part in item.partition("="))
        if not sep or not name or not span:
            raise BadInput(f"--set takes FIELD=SPAN (e.g. pcr_reminder=10d), not {item!r}")
        if name not in FIELDS:
            raise BadInput(f"--set {item!r}: no policy field {name!r}; fields: {', '.join(FIELDS)}")
        if name in fields:
            raise BadInput(f"--set gives {name} twice")
        fields[name] = span
    try:
        overrides = PolicyOverrides.model_validate(fields)
        # Fields given together must agree among themselves; each case checks them with its own.
        if "pcr_reminder" in fields and "pcr_closing" in fields:
            pair = {"pcr_reminder": fields["pcr_reminder"], "pcr_closing": fields["pcr_closing"]}
            DeadlinePolicy.model_validate({**DeadlinePolicy().model_dump(), **pair})
    except ValidationError as invalid:
        raise BadInput(f"--set: {_problems(invalid)}") from None
    return overrides


def _problems(invalid: ValidationError) -> str:
    """Each problem as ``field: message`` (a bound on the whole policy names its fields)."""
    return "; ".join(
        ": ".join(
            part
            for part in (
                ".".join(str(x) for x in e["loc"]),
                str(e["msg"]).removeprefix("Value error, "),
            )
            if part
        )
        for e in invalid.errors()
    )


def event_id(overrides: PolicyOverrides, reason: str) -> str:
    """The same change with the same reason has the same id: a re-run is ignored by the case."""
    given = {name: str(span) for name, span in sorted(overrides.given().items())}
    digest = hashlib.sha256(json.dumps([given, reason]).encode()).hexdigest()
    return f"policy-{digest[:32]}"


def has_values(policy: DeadlinePolicy, overrides: PolicyOverrides) -> bool:
    return all(getattr(policy, name) == span for name, span in overrides.given().items())


class Preview(BaseModel):
    case_number: str
    status: str
    before: Deadline | None
    after: Deadline | None


class Refusal(BaseModel):
    case_number: str
    reason: str
    message: str


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[Refusal] = field(default_factory=list)
    previews: list[Preview] = field(default_factory=list)


async def _one(
    cases: CaseClient, number: str, change: ApplyPolicy, dry_run: bool, outcome: Outcome
) -> None:
    try:
        snap = await asyncio.wait_for(cases.snapshot(number), ANSWER_WITHIN)
        if has_values(snap.policy, change.policy):
            outcome.unchanged.append(number)
            return
        if dry_run:
            after = await asyncio.wait_for(cases.preview_policy(number, change), ANSWER_WITHIN)
            outcome.previews.append(
                Preview(
                    case_number=number,
                    status=snap.status,
                    before=snap.next_deadline,
                    after=after.next_deadline,
                )
            )
            return
        done = await asyncio.wait_for(cases.apply_policy(number, change), ANSWER_WITHIN)
    except CaseRejected as rejected:
        outcome.rejected.append(
            Refusal(case_number=number, reason=rejected.reason or "rejected", message=str(rejected))
        )
        return
    except TimeoutError:
        outcome.rejected.append(
            Refusal(
                case_number=number,
                reason="no_answer",
                message=f"no answer within {ANSWER_WITHIN:.0f} s: is a worker running?",
            )
        )
        return
    if has_values(done.policy, change.policy):
        outcome.applied.append(number)
    else:
        # The case saw this change's event id before (and the policy changed again since).
        outcome.unchanged.append(number)


async def _apply(query: str, change: ApplyPolicy, dry_run: bool, show_bar: bool) -> Outcome:
    cases = await _cases()
    # Open cases only (a closed case's deadlines are over), of this deployment's task queue (a
    # case whose workers are gone would not answer).
    mine = f"TaskQueue = {quoted(cases.task_queue)}"
    scope = f'ExecutionStatus = "Running" AND {mine} AND ({query})'
    numbers = [row.case_number async for row in cases.find(query=scope)]
    outcome = Outcome()
    gate = asyncio.Semaphore(AT_ONCE)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cases"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err(), disable=not show_bar) as progress:
        bar = progress.add_task("previewing" if dry_run else "applying", total=len(numbers))

        async def one(number: str) -> None:
            async with gate:
                await _one(cases, number, change, dry_run, outcome)
            progress.advance(bar)

        await asyncio.gather(*(one(n) for n in numbers))
    for found in (outcome.applied, outcome.unchanged):
        found.sort()
    outcome.rejected.sort(key=lambda r: r.case_number)
    outcome.previews.sort(key=lambda p: p.case_number)
    return outcome


def _deadline(due: Deadline | None) -> str:
    if due is None:
        return "none"
    return f"{when(due.at)} ({ago(due.at)}): {lifecycle.describe(due)}"


@app.command()
def apply(
    query: Annotated[
        str,
        typer.Option(
            help="A visibility query choosing the cases (open ones only), e.g. "
            "'CaseStatus = \"Pending Customer Response\"'.",
        ),
    ],
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="A deadline to change, FIELD=SPAN, repeatable; fields: "
            + ", ".join(FIELDS)
            + "; spans like 14d, 3mo, 2min.",
        ),
    ],
    reason: Annotated[str, typer.Option(help="Why: kept in each case's history.")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print each case's next deadline before and after; change nothing."
        ),
    ] = False,
    actor_role: Annotated[
        PolicyRole, typer.Option("--actor-role", help="Who changes it (staff).")
    ] = PolicyRole.TIER2,
    actor_name: Annotated[
        str | None, typer.Option("--actor-name", help="Their name (default: your login name).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change deadlines of the open cases a query finds.

    A case whose policy has these values already is left alone, so a re-run changes nothing. A
    deadline that already acted never acts again; one the change moves into the past acts at
    once. Exit 1 when a case refused the change.
    """
    with handled(as_json):
        change = ApplyPolicy(
            policy=parse_sets(set_),
            actor=Actor(role=Role(actor_role), name=actor_name or _login()),
            reason=reason,
        )
        change = change.model_copy(update={"event_id": event_id(change.policy, change.reason)})
        outcome = asyncio.run(_apply(query, change, dry_run, show_bar=not as_json))
    code = Code.REJECTED if outcome.rejected else Code.OK
    if as_json:
        emit_json(
            {
                "ok": not outcome.rejected,
                "dry_run": dry_run,
                "event_id": change.event_id,
                "applied": outcome.applied,
                "unchanged": outcome.unchanged,
                "rejected": [r.model_dump() for r in outcome.rejected],
                "previews": [p.model_dump(mode="json") for p in outcome.previews],
            }
        )
        raise typer.Exit(int(code))
    console = out()
    fields = ", ".join(f"{name}={span}" for name, span in change.policy.given().items())
    if not (outcome.applied or outcome.unchanged or outcome.rejected or outcome.previews):
        console.print(f"no open case of task queue {Settings().task_queue} matches: {query}")
    if dry_run and outcome.previews:
        table = Table(title=f"Dry run: {fields}", title_justify="left", box=None)
        for column in ("case", "status", "next deadline now", "after the change"):
            table.add_column(column, header_style="bold")
        for p in outcome.previews:
            table.add_row(p.case_number, p.status, _deadline(p.before), _deadline(p.after))
        console.print(table)
    if outcome.rejected:
        table = Table(title="Rejected", title_justify="left", box=None)
        for column in ("case", "reason", "message"):
            table.add_column(column, header_style="bold")
        for r in outcome.rejected:
            table.add_row(r.case_number, r.reason, r.message)
        console.print(table)
    if dry_run:
        console.print(
            f"dry run: {len(outcome.previews)} would change, {len(outcome.unchanged)} unchanged, "
            f"{len(outcome.rejected)} rejected; nothing was changed"
        )
    else:
        console.print(
            f"{fields}: {len(outcome.applied)} applied, {len(outcome.unchanged)} unchanged, "
            f"{len(outcome.rejected)} rejected"
        )
    raise typer.Exit(int(code))


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


# ---- show ----------------------------------------------------------------------------------


class FieldSource(BaseModel):
    value: str
    source: str  # guide, organisation, opener, change
    change: PolicyChange | None = None  # the change that set it, for organisation and change


def sources(snap: Snapshot) -> dict[str, FieldSource]:
    """Where each field of the case's policy came from: the guide's default, the organisation's
    default (a change by the system when the case opened), the opener, or a later change."""
    guide = DeadlinePolicy()
    last: dict[str, PolicyChange] = {}
    for made in snap.policy_changes:
        for c in made.changes:
            last[c.field] = made
    # The snapshot keeps the newest changes only: an older one may have set a field.
    complete = len(snap.policy_changes) < lifecycle.POLICY_CHANGES_TAIL
    result = {}
    for name in FIELDS:
        value = getattr(snap.policy, name)
        if (change := last.get(name)) is not None:
            source = "organisation" if change.actor.role is Role.SYSTEM else "change"
        elif value == getattr(guide, name):
            source = "guide"
        else:
            source = "opener" if complete else "opener or an earlier change"
        result[name] = FieldSource(value=str(value), source=source, change=change)
    return result


_SOURCE_WORDS = {
    "guide": "the guide's default",
    "organisation": "the organisation's default (CASES_DEFAULT_POLICY)",
    "opener": "set when the case was opened",
    "opener or an earlier change": "set when the case was opened, or by an earlier change",
}


@app.command()
def show(
    case_number: Annotated[str, typer.Argument(help="The case number.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a case's deadline policy and its policy changes.

    Each field, and whether it is the guide's default, the organisation's, the opener's or a
    change's; each change with who, when, why and each field old → new.
    """
    with handled(as_json):

        async def work() -> Snapshot:
            return await asyncio.wait_for((await _cases()).snapshot(case_number), ANSWER_WITHIN)

        snap = asyncio.run(work())
    found = sources(snap)
    if as_json:
        emit_json(
            {
                "case_number": snap.case_number,
                "status": snap.status,
                "policy": {
                    name: {"value": f.value, "source": f.source, "seq": f.change and f.change.seq}
                    for name, f in found.items()
                },
                "policy_changes": [c.model_dump(mode="json") for c in snap.policy_changes],
            }
        )
        return
    console = out()
    console.print(f"[bold]Case {snap.case_number}[/bold] · {snap.status} · deadline policy")
    table = Table(box=None, header_style="bold")
    for column in ("field", "value", "from"):
        table.add_column(column)
    for name, f in found.items():
        origin = _SOURCE_WORDS.get(f.source, "")
        if f.source == "change" and f.change is not None:
            who = f"{f.change.actor.role} {f.change.actor.name}"
            origin = f"changed by {who} {when(f.change.at)} (#{f.change.seq})"
        table.add_row(name, f.value, origin)
    console.print(table)
    if not snap.policy_changes:
        console.print("no policy changes")
        return
    changes = Table(title="Policy changes", title_justify="left")
    for column in ("#", "at", "by", "why", "field old → new"):
        changes.add_column(column)
    for c in snap.policy_changes:
        changes.add_row(
            str(c.seq),
            when(c.at),
            f"{c.actor.role} {c.actor.name}",
            c.reason,
            "\n".join(f"{f.field} {f.old} → {f.new}" for f in c.changes),
        )
    console.print(changes)
