"""``python -m starter release ...``: schedule a release or a release train, ship a release
now, see its progress, list releases and trains.

A Typer sub-app of ``starter.cli``; each command is a thin call of ``CaseClient`` or
``starter.schedules`` (release trains are Temporal Schedules).
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from runtime import signing
from runtime.connection import connect
from settings import Settings
from starter.client import CaseClient
from starter.output import BadInput, Code, ago, emit_json, fail, handled, out, when
from starter.schedules import (
    CalendarError,
    Train,
    TrainExists,
    create_train,
    describe_train,
    list_trains,
    parse_calendar,
)
from workflows.calendar import Span, SpanError
from workflows.contract import (
    RELEASE_ID_PREFIX,
    RELEASE_WORKFLOW,
    Actor,
    ReleaseInput,
    ReleaseStatus,
    Role,
    TrainInput,
)
from workflows.train import train_release

app = typer.Typer(
    help="Releases: schedule one (or a release train), ship it now, see its progress, list them."
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ReleaseArg = Annotated[str, typer.Argument(help="The release id, e.g. 2026.12.")]


async def _cases() -> CaseClient:
    settings = Settings()
    return CaseClient(await connect(), settings.task_queue, signing.signer(settings))


# With a signing key (trusted senders), who ships or moves a release.
AsOpt = Annotated[
    Role,
    typer.Option("--as", help="With a signing key: the staff role that ships or moves it."),
]
ByOpt = Annotated[
    str | None, typer.Option("--name", help="With a signing key: your name (default: login).")
]


def _staff(role: Role, name: str | None) -> Actor | None:
    """The actor a signed release signal names; none without a signing key (as before)."""
    if signing.signer(Settings()) is None:
        return None
    return Actor(role=role, name=name or getpass.getuser())


def _instant(at: str | None, in_: str | None) -> datetime | None:
    if at and in_:
        raise BadInput("give --at or --in, not both")
    if in_:
        try:
            return Span.parse(in_).after(datetime.now(UTC))
        except SpanError as err:
            raise BadInput(str(err)) from None
    if at:
        try:
            instant = datetime.fromisoformat(at)
        except ValueError:
            raise BadInput(f"--at takes an ISO-8601 instant, not {at!r}") from None
        if instant.tzinfo is None:
            raise BadInput(f"--at needs an offset (e.g. {at}+00:00 or {at}Z)")
        return instant
    return None


@app.command()
def schedule(
    release_id: Annotated[
        str,
        typer.Argument(
            help="The release id, e.g. 2026.12; with --calendar, the name of the release train."
        ),
    ],
    at: Annotated[
        str | None,
        typer.Option(help="When it ships: ISO-8601 with an offset, e.g. 2026-12-01T06:00Z."),
    ] = None,
    in_: Annotated[
        str | None, typer.Option("--in", help="Or a span from now, e.g. 2min, 3d.")
    ] = None,
    calendar: Annotated[
        str | None,
        typer.Option(
            help="A release train instead: a Temporal Schedule that opens the next release on "
            "this calendar: monthly, weekly, daily, or fields such as "
            "'day_of_month=1 hour=6' (second minute hour day_of_month month year day_of_week; "
            "values 6, 1-5, 1,15, */2, mon-fri, jan).",
        ),
    ] = None,
    release_format: Annotated[
        str,
        typer.Option(
            help="Train: the id of the release it opens, strftime of the ship instant (UTC).",
        ),
    ] = "%Y.%m",
    ships_after: Annotated[
        str | None,
        typer.Option(help="Train: the release ships this long after the train fires (e.g. 14d)."),
    ] = None,
    time_zone: Annotated[
        str, typer.Option(help="Train: the calendar's time zone (IANA name).")
    ] = "UTC",
    replace: Annotated[
        bool, typer.Option("--replace", help="Train: change the calendar of an existing train.")
    ] = False,
    role: AsOpt = Role.DEVELOPMENT,
    name: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Schedule a release (or move the instant of one that cases already wait on), or, with
    --calendar, a release train: a Temporal Schedule (the UI's Schedules page) that opens the
    next release each time the calendar comes round."""
    if calendar is not None:
        _schedule_train(
            release_id, calendar, at or in_, release_format, ships_after, time_zone, replace,
            as_json,
        )  # fmt: skip
        return
    with handled(as_json):
        release = ReleaseInput(release_id=release_id, ships_at=_instant(at, in_))

        async def work() -> None:
            await (await _cases()).schedule_release(release, _staff(role, name))

        asyncio.run(work())
    if as_json:
        emit_json({"ok": True, **release.model_dump(mode="json")})
        return
    if release.ships_at:
        out().print(
            f"release {release_id} ships at {when(release.ships_at)} ({ago(release.ships_at)})"
        )
    else:
        out().print(f"release {release_id} created; it ships on `release ship-now {release_id}`")


def _schedule_train(
    name: str,
    calendar: str,
    instant: str | None,
    release_format: str,
    ships_after: str | None,
    time_zone: str,
    replace: bool,
    as_json: bool,
) -> None:
    with handled(as_json):
        if instant:
            raise BadInput("a train fires on its --calendar: give --at / --in, or --calendar")
        try:
            spec = parse_calendar(calendar)
            train = TrainInput(train=name, release_format=release_format, ships_after=ships_after)
            train_release(train, datetime.now(UTC))
        except (CalendarError, ValueError) as err:
            if isinstance(err, ValidationError):
                raise
            raise BadInput(str(err)) from None

        async def work() -> Train | None:
            client = await connect()
            try:
                await create_train(
                    client,
                    train,
                    spec,
                    task_queue=Settings().task_queue,
                    time_zone=time_zone,
                    replace=replace,
                )
            except TrainExists as exists:
                fail(Code.USAGE, str(exists), as_json=as_json)
            return await describe_train(client, name)

        described = asyncio.run(work())
    assert described is not None
    coming = described.next_release()
    if as_json:
        emit_json({"ok": True, **_train_json(described)})
        return
    out().print(
        f"release train {name}: schedule {described.schedule_id}, fires on "
        f"{described.calendar} ({described.time_zone})"
    )
    if coming:
        out().print(
            f"next: {when(described.next_fires[0])} opens release {coming[0]}, "
            f"shipping {when(coming[1])}"
        )


@app.command("ship-now")
def ship_now(
    release_id: ReleaseArg,
    role: AsOpt = Role.DEVELOPMENT,
    name: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ship a release now: every case waiting on it starts its 14-day clock."""
    with handled(as_json):

        async def work() -> None:
            try:
                await (await _cases()).ship_now(release_id, _staff(role, name))
            except RPCError as err:
                _no_release(release_id, err)

        asyncio.run(work())
    if as_json:
        emit_json({"ok": True, "release_id": release_id})
        return
    out().print(f"release {release_id}: shipping now")


@app.command()
def status(
    release_id: ReleaseArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Follow the fan-out with a progress bar until every case is told "
            "(waits for the release to ship).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """A release's progress: when it ships, and how many cases were told."""
    with handled(as_json):

        async def work() -> ReleaseStatus:
            try:
                cases = await _cases()
                if watch and not as_json:
                    return await _watch(cases, release_id)
                return await cases.release_status(release_id)
            except RPCError as err:
                _no_release(release_id, err)

        result = asyncio.run(work())
    if as_json:
        emit_json(result)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("release", result.release_id)
    table.add_row(
        "ships at",
        f"{when(result.ships_at)} ({ago(result.ships_at)})" if result.ships_at else "not scheduled",
    )
    table.add_row("shipped", when(result.shipped_at) if result.shipped_at else "not yet")
    table.add_row("cases registered", str(result.cases_registered))
    table.add_row("cases told", str(result.cases_notified))
    table.add_row("cases to tell", str(result.cases_to_notify))
    out().print(table)


async def _watch(cases: CaseClient, release_id: str, every: float = 0.5) -> ReleaseStatus:
    """A progress bar of the cases told, until the release has shipped and told them all."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cases told"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out(), transient=False) as progress:
        bar = progress.add_task(f"release {release_id}", total=None)
        while True:
            current = await cases.release_status(release_id)
            if current.shipped_at is None:
                waiting = f"ships {ago(current.ships_at)}" if current.ships_at else "not scheduled"
                progress.update(bar, description=f"release {release_id} ({waiting})")
            else:
                progress.update(
                    bar,
                    description=f"release {release_id} shipped {when(current.shipped_at)}",
                    total=max(current.cases_registered, 1),
                    completed=current.cases_notified if current.cases_registered else 1,
                )
                if current.cases_to_notify == 0:
                    return current
            await asyncio.sleep(every)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """The open releases with their progress, and the release trains (Temporal Schedules)."""
    with handled(as_json):

        async def work() -> tuple[list[ReleaseStatus], list[str], list[Train]]:
            client = await connect()
            # This deployment's releases (its task queue): a release whose workers are gone
            # would not answer its query.
            query = (
                f'WorkflowType = "{RELEASE_WORKFLOW}" AND ExecutionStatus = "Running" '
                f'AND TaskQueue = "{Settings().task_queue}"'
            )
            handles = [client.get_workflow_handle(e.id) async for e in client.list_workflows(query)]
            gate = asyncio.Semaphore(16)

            async def one(handle: WorkflowHandle) -> ReleaseStatus | str:
                async with gate:
                    try:
                        return await handle.query(
                            "status", result_type=ReleaseStatus, rpc_timeout=QUERY_TIMEOUT
                        )
                    except (RPCError, WorkflowQueryFailedError):
                        # closed meanwhile, or no worker answering: listed without figures
                        return handle.id.removeprefix(RELEASE_ID_PREFIX)

            found = await asyncio.gather(*(one(h) for h in handles))
            releases = [r for r in found if isinstance(r, ReleaseStatus)]
            releases.sort(
                key=lambda r: (r.shipped_at is not None, r.ships_at or _FAR, r.release_id)
            )
            silent = sorted(r for r in found if isinstance(r, str))
            return releases, silent, await list_trains(client)

        releases, silent, trains = asyncio.run(work())
    if as_json:
        emit_json(
            {
                "releases": [r.model_dump(mode="json") for r in releases],
                "unanswered": silent,
                "trains": [_train_json(t) for t in trains],
            }
        )
        return
    table = Table(title="Releases", title_justify="left", box=None, header_style="bold")
    for column in ("release", "ships at", "shipped", "registered", "told", "to tell"):
        table.add_column(column)
    for release_id in silent:
        table.add_row(release_id, "(no answer: is a worker running?)", "", "", "", "")
    for r in releases:
        table.add_row(
            r.release_id,
            when(r.ships_at) if r.ships_at else "not scheduled",
            when(r.shipped_at) if r.shipped_at else "",
            str(r.cases_registered),
            str(r.cases_notified),
            str(r.cases_to_notify),
        )
    out().print(table)
    out().print(f"{len(releases) + len(silent)} open release(s)")
    if trains:
        trains_table = Table(title="Release trains", title_justify="left", box=None)
        for column in ("train", "calendar", "next fire", "opens release", "ships"):
            trains_table.add_column(column, header_style="bold")
        for t in trains:
            coming = t.next_release()
            trains_table.add_row(
                t.train + (" (paused)" if t.paused else ""),
                f"{t.calendar} ({t.time_zone})",
                when(t.next_fires[0]) if t.next_fires else "",
                coming[0] if coming else "",
                when(coming[1]) if coming else "",
            )
        out().print(trains_table)


_FAR = datetime.max.replace(tzinfo=UTC)
# A release that does not answer its status query within this is listed without its figures.
QUERY_TIMEOUT = timedelta(seconds=5)


def _train_json(train: Train) -> dict[str, object]:
    coming = train.next_release()
    return {
        "train": train.train,
        "schedule_id": train.schedule_id,
        "calendar": train.calendar,
        "time_zone": train.time_zone,
        "release_format": train.release_format,
        "ships_after": train.ships_after,
        "paused": train.paused,
        "next_fires": [f.isoformat() for f in train.next_fires],
        "next_release": {"release_id": coming[0], "ships_at": coming[1].isoformat()}
        if coming
        else None,
    }


def _no_release(release_id: str, err: RPCError) -> NoReturn:
    if err.status is RPCStatusCode.NOT_FOUND:
        fail(Code.UNAVAILABLE, f"no release {release_id} (no workflow release-{release_id})")
    raise err
