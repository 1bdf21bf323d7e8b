"""``python -m starter``: the command line for people and scripts, built on ``starter.client``.

It connects where Temporal's environment configuration points (``TEMPORAL_ADDRESS``, a profile,
TLS, API key) and, with nothing configured, to ``localhost:7233``: the embedded server that
``make run`` starts. Events go as updates, so a rejection's reason is printed at once and the exit
code says what happened (see ``starter.output``); ``--json`` prints JSON for scripts.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from temporalio.client import Client

from runtime import signing
from runtime.connection import TemporalUnavailable, address_configured, connect
from runtime.pollers import pollers, worker_polls
from settings import Settings
from starter import import_cli, keys_cli, policy_cli, release_cli, report_cli
from starter.client import CaseClient, CaseRow, case_query
from starter.demo import DEMO_POLICY, open_demo, watch_demo
from starter.output import BadInput, Code, emit_json, err, fail, handled, out, safe
from starter.render import render_change, render_rows, render_snapshot
from workflows import lifecycle
from workflows.contract import (
    CASE_ID_PREFIX,
    Actor,
    CaseInput,
    CustomerReply,
    DeadlinePolicy,
    PolicyOverrides,
    Priority,
    Role,
    Snapshot,
    Status,
    TierHandoff,
    TransitionRequest,
)
from workflows.lifecycle import Via

T = TypeVar("T")

# How long an event waits for the case to answer; no answer means no worker is running.
ANSWER_WITHIN = 30.0

# The choices of ``transition``: exactly the statuses the table lets a transition request reach.
if TYPE_CHECKING:
    Target = Status
    ActorRole = Role
else:
    Target = StrEnum("STATUS", {s.name: s.value for s in lifecycle.targets(Via.TRANSITION)})
    ActorRole = StrEnum("ROLE", {r.name: r.value for r in Role if r is not Role.SYSTEM})


def _transition_help() -> str:
    rows = []
    for rule in lifecycle.rules():
        if rule.via is not Via.TRANSITION:
            continue
        sources = ", ".join(s for s in Status if s in rule.sources)
        targets = ", ".join(s for s in Status if s in rule.targets)
        roles = ", ".join(r for r in Role if r in rule.roles)
        note = f" ({rule.note})" if rule.note else ""
        rows.append(f"• {sources} → [bold]{targets}[/bold]: {roles}{note}")
    others = (
        "Customer replies and tier handoffs are their own commands (reply, handoff); "
        "deadlines are the case's own."
    )
    return "The transitions of the lifecycle table:\n\n" + "\n\n".join(rows) + f"\n\n{others}"


app = typer.Typer(
    name="starter",
    help=(
        "Support cases on Temporal: open cases, send events, show and list cases, run a demo.\n\n"
        "Connects where TEMPORAL_ADDRESS / TEMPORAL_PROFILE point, else to localhost:7233 "
        "(make run). Exit codes: 0 done, 1 rejected, 2 bad input, 3 Temporal unreachable or "
        "no such case."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(release_cli.app, name="release")
app.add_typer(policy_cli.app, name="policy")
app.add_typer(keys_cli.app, name="keys")
db_app = typer.Typer(help="The case store (SQLite or PostgreSQL, CASES_DATABASE_URL).")
app.add_typer(db_app, name="db")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="The actor's name (default: your login name).")
]
InstitutionOpt = Annotated[
    str | None,
    typer.Option(
        "--institution",
        help="The actor's institution (a customer's defaults to the case's institution).",
    ),
]
EventIdOpt = Annotated[
    str | None,
    typer.Option("--event-id", help="Idempotency key: an event id the case has seen is ignored."),
]
NoteOpt = Annotated[str | None, typer.Option("--note", help="A note for the history.")]


# ---- plumbing ------------------------------------------------------------------------------


def _settings() -> Settings:
    return Settings()


def _run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


async def _cases() -> CaseClient:
    settings = _settings()
    return CaseClient(await connect(), settings.task_queue, signing.signer(settings))


@app.callback()
def _signing_key(
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Sign every event with this sender key (trusted senders; python -m starter "
            "keys new); default CASES_SIGNING_KEY.",
        ),
    ] = None,
) -> None:
    signing.use(key)


async def _answer(case_number: str, work: Coroutine[Any, Any, T]) -> T:
    try:
        return await asyncio.wait_for(work, ANSWER_WITHIN)
    except TimeoutError:
        fail(
            Code.UNAVAILABLE,
            f"case {case_number} did not answer within {ANSWER_WITHIN:.0f} s: "
            f"is a worker polling task queue {_settings().task_queue}? (make run)",
        )


def _actor(role: Role, name: str | None, institution: str | None) -> Actor:
    return Actor(role=role, name=name or _login(), institution=institution)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


async def _fill_actor(
    cases: CaseClient,
    case_number: str,
    role: Role | None,
    name: str | None,
    institution: str | None,
    to: Status | None = None,
) -> Actor:
    """The actor, with the defaults that need the case: a customer's institution, and for a
    transition without ``--as`` the role the table allows for this move."""
    needs_case = (role is Role.CUSTOMER and institution is None) or role is None
    if not needs_case:
        assert role is not None
        return _actor(role, name, institution)
    snap = await cases.snapshot(case_number)
    if role is None:
        role = _role_for(snap, to)
    if role is Role.CUSTOMER and institution is None:
        institution = snap.institution
    return _actor(role, name, institution)


def _role_for(snap: Snapshot, to: Status | None) -> Role:
    rules = [
        r
        for r in lifecycle.rules_from(snap.status, Via.TRANSITION)
        if to is None or to in r.targets
    ]
    allowed = [r for r in Role if r is not Role.SYSTEM and any(r in rule.roles for rule in rules)]
    if len(allowed) == 1:
        return allowed[0]
    owner = Role.TIER1 if snap.owner_tier == 1 else Role.TIER2
    if owner in allowed:
        return owner
    if not allowed:
        # Let the case answer with its own reason (not a transition of the lifecycle).
        return owner
    fail(
        Code.USAGE,
        f"say who moves case {snap.case_number} from {snap.status} to {to}: "
        f"--as one of {', '.join(allowed)}",
    )


def _policy(items: list[str] | None, demo: bool) -> PolicyOverrides | None:
    """The opener's overrides: only the fields given, so the rest follow the organisation's
    default (CASES_DEFAULT_POLICY)."""
    if not items and not demo:
        return None
    fields: dict[str, Any] = DEMO_POLICY.model_dump(mode="json") if demo else {}
    for item in items or []:
        key, sep, span = item.partition("=")
        if not sep or not key.strip() or not span.strip():
            raise BadInput(f"--policy takes KEY=SPAN (e.g. pcr_reminder=2min), not {item!r}")
        fields[key.strip()] = span.strip()
    return PolicyOverrides.model_validate(fields)


def _ui_link(path: str) -> str | None:
    """A Web UI link, when the UI is the embedded server's (no address configured)."""
    try:
        if address_configured():
            return None
    except TemporalUnavailable:
        return None
    return f"http://localhost:{_settings().ui_port}/namespaces/default/{path}"


async def _pollers(client: Client, task_queue: str) -> int:
    return len(await pollers(client, task_queue))


def _changed(snap: Snapshot, as_json: bool) -> None:
    if as_json:
        emit_json(snap)
        return
    render_change(snap)


# ---- commands ------------------------------------------------------------------------------


@app.command("open")
def open_case(
    case_number: Annotated[
        str, typer.Argument(help="The case number: letters, digits and dashes (e.g. 00123456).")
    ],
    institution: Annotated[str, typer.Option(help="The customer's institution.")],
    product: Annotated[str, typer.Option(help="The product concerned.")],
    title: Annotated[str, typer.Option(help="One line: what is wrong.")],
    contact: Annotated[str, typer.Option(help="Email address of the case's contact.")],
    priority: Annotated[Priority, typer.Option(case_sensitive=False)] = Priority.NORMAL,
    affects_multiple_institutions: Annotated[
        bool, typer.Option(help="The issue affects several institutions.")
    ] = False,
    references: Annotated[
        str | None, typer.Option(help="The closed case this one recurs from.")
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help=(
                "Staff (--as tier1): override a deadline of this case, KEY=SPAN, repeatable "
                "(the rest follow the organisation's default); keys: "
                + ", ".join(DeadlinePolicy.model_fields)
                + "; spans like 14d, 3mo, 2min."
            ),
        ),
    ] = None,
    demo_policy: Annotated[
        bool,
        typer.Option(
            "--demo-policy", help="Staff (--as tier1): deadlines in minutes, as the demo uses."
        ),
    ] = False,
    role: Annotated[
        ActorRole, typer.Option("--as", help="Who opens it: customer or tier1.")
    ] = ActorRole.CUSTOMER,
    name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a case: start its SupportCase workflow (id case-NUMBER)."""
    with handled(as_json):
        opener = Role(role)
        overrides = _policy(policy, demo_policy)
        if overrides is not None and opener is Role.CUSTOMER:
            # The case would ignore it (deadlines are the organisation's promise): say so now.
            raise BadInput(
                "--policy is for staff: open with --as tier1 (a customer gets the defaults)"
            )
        case = CaseInput(
            case_number=case_number,
            institution=institution,
            product=product,
            priority=priority,
            title=title,
            contact_email=contact,
            affects_multiple_institutions=affects_multiple_institutions,
            references=references,
            opened_by=_actor(opener, name, institution if opener is Role.CUSTOMER else None),
            policy=overrides,
        )

        async def work() -> tuple[str, int]:
            cases = await _cases()
            handle = await cases.open(case)
            return handle.id, await _pollers(cases.client, cases.task_queue)

        workflow_id, pollers = _run(work())
    if as_json:
        emit_json({"ok": True, "case_number": case_number, "workflow_id": workflow_id})
        return
    out().print(
        f"opened case [bold]{safe(case_number)}[/bold] · {safe(institution)} · {priority} — "
        f"{safe(title)} (workflow {safe(workflow_id)})"
    )
    if link := _ui_link(f"workflows/{workflow_id}"):
        out().print(f"Web UI: {link}")
    if not pollers:
        err().print(
            f"warning: no worker polls task queue {_settings().task_queue}; the case waits "
            "until one does (make run)"
        )


@app.command(epilog=_transition_help())
def transition(
    case_number: Annotated[str, typer.Argument(help="The case number.")],
    to: Annotated[
        Target,
        typer.Argument(
            case_sensitive=False,
            show_choices=False,
            metavar="STATUS",
            help="The status to move to (quote it; any letter case): "
            + ", ".join(lifecycle.targets(Via.TRANSITION))
            + ".",
        ),
    ],
    role: Annotated[
        ActorRole | None,
        typer.Option(
            "--as",
            help="Who asks (default: the role the table allows for this move; "
            "the owner tier's when several).",
        ),
    ] = None,
    name: NameOpt = None,
    institution: InstitutionOpt = None,
    note: NoteOpt = None,
    release_id: Annotated[
        str | None, typer.Option("--release-id", help="For Pending Release: the release.")
    ] = None,
    event_id: EventIdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a case to another status, as the lifecycle table allows."""
    target = Status(to)
    with handled(as_json):

        async def work() -> Snapshot:
            cases = await _cases()
            actor = await _fill_actor(
                cases, case_number, Role(role) if role else None, name, institution, target
            )
            request = TransitionRequest(
                to=target, actor=actor, note=note, release_id=release_id, event_id=event_id
            )
            return await _answer(case_number, cases.transition(case_number, request))

        snap = _run(work())
    _changed(snap, as_json)


@app.command()
def reply(
    case_number: Annotated[str, typer.Argument(help="The case number.")],
    text: Annotated[str, typer.Argument(help="What the customer says.")],
    role: Annotated[ActorRole, typer.Option("--as", help="Who replies.")] = ActorRole.CUSTOMER,
    name: NameOpt = None,
    institution: InstitutionOpt = None,
    event_id: EventIdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A customer reply (the customer answers or comments).

    From Pending Customer Response, Closing or Pending Customer Testing it moves the case to
    Waiting for Process; elsewhere it is kept as a comment and the owner tier is told.
    """
    with handled(as_json):

        async def work() -> Snapshot:
            cases = await _cases()
            actor = await _fill_actor(cases, case_number, Role(role), name, institution)
            event = CustomerReply(text=text, actor=actor, event_id=event_id)
            return await _answer(case_number, cases.reply(case_number, event))

        snap = _run(work())
    _changed(snap, as_json)


@app.command()
def handoff(
    case_number: Annotated[str, typer.Argument(help="The case number.")],
    to_tier: Annotated[int, typer.Argument(min=1, max=2, help="The tier to hand to: 2 or 1.")],
    reason: Annotated[
        str,
        typer.Option(
            help="To Tier 2: one of "
            + ", ".join(lifecycle.HANDOFF_REASONS)
            + ". Back to Tier 1: free text."
        ),
    ],
    note: Annotated[str, typer.Option(help="A note for the other tier.")] = "",
    role: Annotated[
        ActorRole | None,
        typer.Option("--as", help="Who hands off (default: tier1 to Tier 2, tier2 to Tier 1)."),
    ] = None,
    name: NameOpt = None,
    institution: InstitutionOpt = None,
    event_id: EventIdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand a case to the other tier (Tier 2 New, or Tier 2 Closed back to Tier 1)."""
    with handled(as_json):
        who = Role(role) if role else (Role.TIER1 if to_tier == 2 else Role.TIER2)

        async def work() -> Snapshot:
            cases = await _cases()
            actor = await _fill_actor(cases, case_number, who, name, institution)
            event = TierHandoff(
                to_tier=to_tier,
                reason=reason,
                note=note,
                actor=actor,
                event_id=event_id,
            )
            return await _answer(case_number, cases.handoff(case_number, event))

        snap = _run(work())
    _changed(snap, as_json)


@app.command()
def show(
    case_number: Annotated[str, typer.Argument(help="The case number.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a case: status, since, owner tier, next deadline, timeline, history, rejections."""
    with handled(as_json):

        async def work() -> Snapshot:
            cases = await _cases()
            return await _answer(case_number, cases.snapshot(case_number))

        snap = _run(work())
    if as_json:
        emit_json(snap)
        return
    render_snapshot(snap)


@app.command("list")
def list_cases(
    status: Annotated[
        list[Status] | None,
        typer.Option(
            "--status",
            case_sensitive=False,
            show_choices=False,
            metavar="STATUS",
            help="Cases in this status (quote it); repeatable.",
        ),
    ] = None,
    institution: Annotated[str | None, typer.Option(help="Cases of this institution.")] = None,
    release_id: Annotated[
        str | None, typer.Option("--release", help="Cases of this release.")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            help="A visibility query, e.g. 'CaseNextDeadline < \"2026-12-01T00:00:00Z\"'."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many (0: all).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List cases by status, institution, release or any visibility query (newest first)."""
    criteria: dict[str, Any] = {
        "status": [str(s) for s in status or []],
        "institution": institution,
        "release_id": release_id,
        "query": query,
    }
    with handled(as_json):

        async def work() -> list[CaseRow]:
            cases = await _cases()
            return [row async for row in cases.find(limit=limit or None, **criteria)]

        rows = _run(work())
    if as_json:
        emit_json(rows)
        return
    render_rows(rows, case_query(**criteria), limit)


@app.command()
def demo(
    watch: Annotated[
        bool, typer.Option(help="Keep a live table until every demo case is closed.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Open a handful of cases whose deadlines are minutes, to watch them move live.

    Within about five minutes the Web UI shows a reminder, a release shipping, work-plan
    reviews, Closing and Closed. Needs a running worker (make run).
    """
    with handled(as_json):
        opened, prefix = _run(_demo())
    query = f'WorkflowId STARTS_WITH "{CASE_ID_PREFIX}{prefix}"'
    if as_json:
        emit_json({"ok": True, "cases": opened, "query": query})
        return
    out().print(f"opened {len(opened)} demo cases (deadlines in minutes):")
    for number, story in opened:
        out().print(f"  {number}  {story}")
    if link := _ui_link(f"workflows?query={quote(query)}"):
        out().print(f"Web UI: {link}")
    out().print(f"python -m starter list --query '{query}'")
    if watch:
        with handled(as_json):
            _run(_watch(query))


async def _demo() -> tuple[list[tuple[str, str]], str]:
    cases = await _cases()
    # A worker started a moment ago (make run's first lines) polls within seconds: wait for it.
    if not await worker_polls(cases.client, cases.task_queue, err()):
        fail(
            Code.UNAVAILABLE,
            f"no worker polls task queue {cases.task_queue}: start one first (make run)",
        )
    return await open_demo(cases, _answer)


async def _watch(query: str) -> None:
    await watch_demo(await _cases(), query)


@app.command("codec-server")
def codec_server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    origin: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="A browser origin allowed to call it, e.g. the Web UI's (repeatable; "
            "default CASES_CODEC_CORS_ORIGINS).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="Bearer token every call must carry (default CASES_CODEC_TOKEN)."
        ),
    ] = None,
) -> None:
    """Serve Temporal's codec endpoints (/encode, /decode) with the worker's encryption keys,
    so the Web UI (--ui-codec-endpoint) and `temporal --codec-endpoint` show cases decoded."""
    from runtime.encryption import EncryptionConfigError
    from starter import codec_server as server

    try:
        web_app = server.from_settings(_settings(), origin, token)
    except EncryptionConfigError as problem:
        fail(Code.USAGE, str(problem))
    listening = f"codec server on http://{host}:{port} (Ctrl-C stops it)"
    _run(server.serve(web_app, host, port, ready=lambda: out().print(listening)))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the case store's schema up to date (the worker does this at start too)."""
    from sqlalchemy.engine import make_url

    from activities import upgrade

    url = _settings().database_url
    _run(upgrade(url))
    shown = make_url(url).render_as_string(hide_password=True)
    out().print(f"case store up to date: {shown}")


# The case store's reports (starter/report_cli.py), after the case commands in --help.
app.command("report")(report_cli.report)
app.command("history")(report_cli.history)
app.command("import")(import_cli.import_cases)


def main() -> None:
    """The console entry point: run, then leave without interpreter finalisation (see
    ``worker.run``: the SDK's runtime can crash a process at exit, temporalio/sdk-python#300)."""
    import os
    import sys

    try:
        app(prog_name="python -m starter")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
