"""How the command line shows cases to people: Rich tables and one-line results (``--json``
prints the models themselves, see ``starter.output.emit_json``)."""

from __future__ import annotations

from rich.table import Table

from starter.client import CaseRow
from starter.output import ago, out, safe, when
from workflows import lifecycle
from workflows.contract import Snapshot, Status


def render_change(snap: Snapshot) -> None:
    """One line for an event a case took: where it moved and its next deadline."""
    last = snap.history[-1] if snap.history else None
    moved = (
        f"{last.from_status} → [bold]{snap.status}[/bold]"
        if last and last.at == snap.status_since and last.from_status
        else f"[bold]{snap.status}[/bold]"
    )
    due = snap.next_deadline
    deadline = (
        f"next deadline {when(due.at)} ({ago(due.at)}): {lifecycle.describe(due)}"
        if due
        else "no deadline: waiting for people"
    )
    out().print(
        f"case {safe(snap.case_number)}: {moved} · owner Tier {snap.owner_tier} · {deadline}"
    )


def render_snapshot(snap: Snapshot) -> None:
    console = out()
    console.print(
        f"[bold]Case {safe(snap.case_number)}[/bold] · {safe(snap.institution)} · "
        f"{snap.priority} — {safe(snap.title)}"
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    due = snap.next_deadline
    facts.add_row("status", f"[bold]{snap.status}[/bold]")
    facts.add_row("since", f"{when(snap.status_since)} ({ago(snap.status_since)})")
    facts.add_row("owner tier", f"Tier {snap.owner_tier}")
    facts.add_row(
        "next deadline",
        f"{when(due.at)} ({ago(due.at)}): {lifecycle.describe(due)}"
        if due
        else "none: the case is closed"
        if snap.status == Status.CLOSED
        else "none: waiting for people",
    )
    facts.add_row("product", safe(snap.product))
    if snap.release_id:
        shipped = f"shipped {when(snap.release_shipped_at)}" if snap.release_shipped_at else ""
        facts.add_row("release", f"{safe(snap.release_id)} {shipped}".strip())
    facts.add_row("opened", when(snap.opened_at))
    if snap.closed_at:
        facts.add_row("closed", when(snap.closed_at))
    if snap.references:
        facts.add_row("references", safe(snap.references))
    facts.add_row(
        "policy",
        ", ".join(f"{k}={v}" for k, v in snap.policy.model_dump(mode="json").items()),
    )
    console.print(facts)

    if snap.timeline:
        timeline = Table(title="Timeline if nobody acts", title_justify="left")
        timeline.add_column("when")
        timeline.add_column("")
        timeline.add_column("what")
        for deadline in snap.timeline:
            timeline.add_row(when(deadline.at), ago(deadline.at), lifecycle.describe(deadline))
        console.print(timeline)

    history = Table(title="History", title_justify="left")
    for column in ("#", "at", "from → to", "by", "note"):
        history.add_column(column)
    for entry in snap.history:
        who = safe(f"{entry.actor.role} {entry.actor.name}")
        # A deadline that acted late shows both instants: when it acted, and when it was due.
        late = f" (due {when(entry.due)})" if entry.due and entry.due != entry.at else ""
        history.add_row(
            str(entry.seq),
            when(entry.at) + late,
            f"{entry.from_status or '(opened)'} → {entry.to_status}",
            who,
            safe(entry.note) if entry.note is not None else None,
        )
    console.print(history)

    if snap.rejected:
        rejected = Table(title="Rejected events", title_justify="left")
        for column in ("at", "event", "reason", "message"):
            rejected.add_column(column)
        for event in snap.rejected:
            rejected.add_row(
                when(event.at), safe(event.event), safe(event.reason), safe(event.message)
            )
        console.print(rejected)

    if snap.undelivered:
        undelivered = Table(title="Undelivered email", title_justify="left")
        for column in ("message", "template", "the mail server's answer"):
            undelivered.add_column(column)
        for mail in snap.undelivered:
            undelivered.add_row(safe(mail.key), safe(mail.template), safe(mail.reason))
        console.print(undelivered)


def render_rows(rows: list[CaseRow], query: str, limit: int) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("case", "status", "priority", "institution", "tier", "next deadline", "release"):
        table.add_column(column)
    for row in rows:
        due = f"{when(row.next_deadline)} ({ago(row.next_deadline)})" if row.next_deadline else "—"
        table.add_row(
            safe(row.case_number),
            safe(row.status or "?"),
            safe(row.priority or ""),
            safe(row.institution or ""),
            safe(row.owner_tier or ""),
            due,
            safe(row.release_id or ""),
        )
    console = out()
    console.print(table)
    more = " (the first ones; --limit 0 for all)" if limit and len(rows) >= limit else ""
    console.print(f"[dim]{len(rows)} case(s){more}; query: {safe(query or 'all cases')}[/dim]")


def render_demo(rows: list[CaseRow]) -> Table:
    """The demo's live table: each case's status and next deadline."""
    table = Table(box=None, header_style="bold")
    for column in ("case", "status", "next deadline"):
        table.add_column(column)
    for row in sorted(rows, key=lambda row: row.case_number):
        due = f"{when(row.next_deadline)} ({ago(row.next_deadline)})" if row.next_deadline else ""
        table.add_row(safe(row.case_number), safe(row.status or "?"), due)
    return table
