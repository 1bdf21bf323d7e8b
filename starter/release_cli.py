"""``python -m starter release ...``: schedule a release, ship it now, see its progress.

A Typer sub-app of ``starter.cli``; each command is a thin call of ``CaseClient``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer
from rich.table import Table
from temporalio.service import RPCError, RPCStatusCode

from settings import Settings
from starter.client import CaseClient
from starter.connection import connect
from starter.output import BadInput, Code, ago, emit_json, fail, handled, out, when
from workflows.calendar import Span, SpanError
from workflows.contract import ReleaseInput, ReleaseStatus

app = typer.Typer(help="Releases: schedule one, ship it now, see its progress.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ReleaseArg = Annotated[str, typer.Argument(help="The release id, e.g. 2026.12.")]


async def _cases() -> CaseClient:
    return CaseClient(await connect(), Settings().task_queue)


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
    release_id: ReleaseArg,
    at: Annotated[
        str | None,
        typer.Option(help="When it ships: ISO-8601 with an offset, e.g. 2026-12-01T06:00Z."),
    ] = None,
    in_: Annotated[
        str | None, typer.Option("--in", help="Or a span from now, e.g. 2min, 3d.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Schedule a release (or move the instant of one that cases already wait on)."""
    with handled(as_json):
        release = ReleaseInput(release_id=release_id, ships_at=_instant(at, in_))

        async def work() -> None:
            await (await _cases()).schedule_release(release)

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


@app.command("ship-now")
def ship_now(release_id: ReleaseArg, as_json: JsonOpt = False) -> None:
    """Ship a release now: every case waiting on it starts its 14-day clock."""
    with handled(as_json):

        async def work() -> None:
            try:
                await (await _cases()).ship_now(release_id)
            except RPCError as err:
                _no_release(release_id, err)

        asyncio.run(work())
    if as_json:
        emit_json({"ok": True, "release_id": release_id})
        return
    out().print(f"release {release_id}: shipping now")


@app.command()
def status(release_id: ReleaseArg, as_json: JsonOpt = False) -> None:
    """A release's progress: when it ships, and how many cases were told."""
    with handled(as_json):

        async def work() -> ReleaseStatus:
            try:
                return await (await _cases()).release_status(release_id)
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


def _no_release(release_id: str, err: RPCError) -> NoReturn:
    if err.status is RPCStatusCode.NOT_FOUND:
        fail(Code.UNAVAILABLE, f"no release {release_id} (no workflow release-{release_id})")
    raise err
