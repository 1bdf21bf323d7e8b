"""``python -m starter import FILE``: move another help desk's open backlog in, clocks running.

Each row is checked by the pure core first (the status a case can hold, dates not in the future,
the deadlines its clock has passed), so a bad row is reported without starting anything;
``--dry-run`` stops there and prints what every row would become. A real run starts the cases a
few at a time (``--concurrency``), waits until each has opened (it answers ``snapshot``), and
skips a case already imported with the same input, so a re-run after a crash imports only what
is left. Every refused row goes, with its line and reason, to the refusals file; the exit code
is 0 only if every row was imported or already there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from runtime.connection import connect
from settings import Settings, policy_settings
from starter.backlog import BacklogError, Mapping, Parsed, RowError, parse
from starter.client import CaseClient, CaseRejected
from starter.output import BadInput, Code, emit_json, err, handled, out, when
from workflows import lifecycle
from workflows.contract import Actor, PolicySettings, Role

# Cases started at once: enough to keep a worker busy, few enough not to flood the frontend.
CONCURRENCY = 16
# How long a started case may take to answer its first snapshot; no answer: is a worker up?
ANSWER_WITHIN = 60.0


class Rate(ProgressColumn):
    """Rows per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "-/s")


@dataclass
class Outcome:
    imported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class Preview:
    line: int
    case_number: str
    imported_as: str
    status: str
    next_deadline: str
    emails: list[str]


def check(rows: list[Parsed | RowError], policy: PolicySettings, now: datetime) -> Outcome:
    """The rows the core refuses (as the worker's case would), before anything starts."""
    outcome = Outcome()
    for row in rows:
        if isinstance(row, RowError):
            outcome.refused.append(row)
            continue
        try:
            lifecycle.imported_outcome(row.case, policy, now)
        except lifecycle.Rejection as rejection:
            outcome.refused.append(RowError(row.line, row.case.case_number, rejection.message))
    return outcome


def preview(row: Parsed, policy: PolicySettings, now: datetime) -> Preview:
    decision = lifecycle.imported_outcome(row.case, policy, now)
    due = lifecycle.next_deadline(decision.state)
    assert row.case.imported is not None
    return Preview(
        line=row.line,
        case_number=row.case.case_number,
        imported_as=str(row.case.imported.status),
        status=str(decision.state.status),
        next_deadline=f"{when(due.at)}: {lifecycle.describe(due)}" if due else "none",
        emails=[str(e.template) for e in decision.effects if e.kind == "notify"],
    )


async def start_all(
    cases: CaseClient, rows: list[Parsed], concurrency: int, outcome: Outcome, show: bool
) -> None:
    gate = asyncio.Semaphore(concurrency)
    columns = (
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err(), disable=not show) as progress:
        bar = progress.add_task("importing", total=len(rows))

        async def one(row: Parsed) -> None:
            async with gate:
                await _import(cases, row, outcome)
            progress.advance(bar)

        await asyncio.gather(*(one(r) for r in rows))


async def _import(cases: CaseClient, row: Parsed, outcome: Outcome) -> None:
    number = row.case.case_number
    try:
        handle = await cases.import_case(row.case)
        if handle is None:
            outcome.already.append(number)
            return
        # Opened once it answers: its number claimed, its rows recorded, its clock armed.
        await asyncio.wait_for(cases.snapshot(number), ANSWER_WITHIN)
    except CaseRejected as rejected:
        outcome.refused.append(RowError(row.line, number, str(rejected)))
        return
    except TimeoutError:
        outcome.refused.append(
            RowError(row.line, number, f"started, no answer within {ANSWER_WITHIN:.0f} s")
        )
        return
    outcome.imported.append(number)


def import_cases(
    file: Annotated[Path, typer.Argument(help="The export: CSV with a header, or JSON lines.")],
    map_: Annotated[
        Path | None,
        typer.Option(
            "--map", help="JSON: another help desk's column and status names, and defaults."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what each row would become; start nothing."),
    ] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Cases started at once.")
    ] = CONCURRENCY,
    refusals: Annotated[
        Path | None,
        typer.Option(help="Where the refused rows go (default: FILE.refused.txt)."),
    ] = None,
    importer: Annotated[
        str, typer.Option(help="The importer's name in each case's history.")
    ] = "import",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Import another help desk's open cases, each in its status, its deadlines counted from
    when it entered it (README "Moving in").

    No "opened" email goes out; a deadline already past acts once, with the notice it owes.
    Exit 0 only if every row was imported or already there; each refused row's line and
    reason are in the refusals file.
    """
    with handled(as_json):
        try:
            rows = parse(file, Mapping.load(map_), Actor(role=Role.IMPORTER, name=importer))
        except BacklogError as problem:
            raise BadInput(str(problem)) from None
        settings = Settings()
        policy = policy_settings(settings)
        now = datetime.now(UTC)
        outcome = check(rows, policy, now)
        refused_lines = {r.line for r in outcome.refused}
        good = [r for r in rows if isinstance(r, Parsed) and r.line not in refused_lines]
        started = time.monotonic()
        previews = [preview(r, policy, now) for r in good] if dry_run else []
        if dry_run and not as_json:
            _print_dry_run(previews)
        elif not dry_run:
            asyncio.run(_run(good, concurrency, outcome, show=not as_json))
        took = time.monotonic() - started
    target = refusals or file.with_name(file.name + ".refused.txt")
    outcome.refused.sort(key=lambda r: r.line)
    if outcome.refused:
        target.write_text("".join(f"{r}\n" for r in outcome.refused))
    elif target.exists() and not dry_run:
        target.unlink()  # a re-run that refused nothing leaves no stale list behind
    code = Code.REJECTED if outcome.refused else Code.OK
    if as_json:
        emit_json(
            {
                "ok": not outcome.refused,
                "dry_run": dry_run,
                "rows": len(rows),
                "imported": len(outcome.imported),
                "already_there": len(outcome.already),
                "refused": [
                    {"line": r.line, "case_number": r.case_number, "reason": r.reason}
                    for r in outcome.refused
                ],
                "seconds": round(took, 2),
                "previews": [vars(p) for p in previews],
            }
        )
        raise typer.Exit(int(code))
    console = out()
    for refusal in outcome.refused[:20]:
        console.print(f"refused: {refusal}")
    if len(outcome.refused) > 20:
        console.print(f"… {len(outcome.refused) - 20} more")
    where = f"; refused rows in {target}" if outcome.refused else ""
    if dry_run:
        console.print(
            f"dry run: {len(good)} of {len(rows)} rows would be imported, "
            f"{len(outcome.refused)} refused{where}; nothing was started"
        )
    else:
        rate = len(outcome.imported) / took if took > 0 else 0.0
        console.print(
            f"{len(rows)} rows: {len(outcome.imported)} imported ({rate:.1f}/s), "
            f"{len(outcome.already)} already there, {len(outcome.refused)} refused{where}"
        )
    raise typer.Exit(int(code))


async def _run(rows: list[Parsed], concurrency: int, outcome: Outcome, show: bool) -> None:
    settings = Settings()
    cases = CaseClient(await connect(), settings.task_queue)
    await start_all(cases, rows, concurrency, outcome, show)


def _print_dry_run(previews: list[Preview]) -> None:
    table = Table(title="Dry run", title_justify="left", box=None)
    for column in ("line", "case", "imported as", "then", "next deadline", "emails owed"):
        table.add_column(column, header_style="bold")
    for p in previews:
        then = p.status if p.status != p.imported_as else "(stays)"
        table.add_row(
            str(p.line),
            p.case_number,
            p.imported_as,
            then,
            p.next_deadline,
            ", ".join(p.emails) or "none",
        )
    out().print(table)
