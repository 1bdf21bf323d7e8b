"""``python -m starter keys ...``: sender keys and tokens for trusted senders (README "Trust
model"). ``keys new`` writes a private key file and prints the entry for the senders file;
``keys token`` prints a proof for one event, for scripts that send events with curl or the
``temporal`` CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from runtime import signing
from settings import Settings
from starter.output import BadInput, handled
from workflows.calendar import Span, SpanError
from workflows.contract import (
    Actor,
    Role,
    case_workflow_id,
    release_workflow_id,
)

app = typer.Typer(help="Trusted senders: make a sender key, make a signed token.")


@app.command("new")
def new(
    sender: Annotated[str, typer.Option(help="The sender's name (the token's iss).")],
    role: Annotated[
        list[Role], typer.Option("--role", help="A role it may assert (repeat for more).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the private key file (JSON).")],
    institution: Annotated[
        list[str] | None,
        typer.Option(help="Customers of this institution it may assert ('*': any; repeat)."),
    ] = None,
    kid: Annotated[str | None, typer.Option(help="The key id (default: sender-date).")] = None,
) -> None:
    """A new Ed25519 key: the private key file (mode 600), and on stdout the senders-file entry
    (TOML) with the public key, valid from now."""
    with handled(False):
        if Role.SYSTEM in role:
            raise BadInput("the system role is the workflow's own; no sender may assert it")
        now = datetime.now(UTC).replace(microsecond=0)
        key_id = kid or f"{sender}-{now:%Y%m%dT%H%M%S}"
        key, public = signing.new_key(sender, key_id)
        try:
            signing.write_key(out, key)
        except FileExistsError:
            raise BadInput(f"{out} exists; a key file is never overwritten") from None
    roles = ", ".join(json.dumps(str(r)) for r in role)
    institutions = ", ".join(json.dumps(i) for i in institution or [])
    typer.echo(
        f"\n[[senders]]\nname = {json.dumps(sender)}\nroles = [{roles}]\n"
        f"institutions = [{institutions}]\n\n[[senders.keys]]\nkid = {json.dumps(key_id)}\n"
        f"public_key = {json.dumps(public)}\nnot_before = {json.dumps(now.isoformat())}"
    )


@app.command("token")
def token(
    role: Annotated[Role, typer.Option("--as", help="The actor's role.")],
    name: Annotated[str, typer.Option(help="The actor's name.")],
    event_id: Annotated[str, typer.Option(help="The event's event_id (the token's jti).")],
    case: Annotated[str | None, typer.Option(help="The case number it is for.")] = None,
    release: Annotated[str | None, typer.Option(help="Or the release id it is for.")] = None,
    institution: Annotated[str | None, typer.Option(help="The actor's institution.")] = None,
    ttl: Annotated[str, typer.Option(help="How long it is valid (e.g. 5min, 1h).")] = "5min",
    key: Annotated[
        Path | None, typer.Option(help="The sender key file; default CASES_SIGNING_KEY.")
    ] = None,
) -> None:
    """Print a proof for one event: put it in the event's "proof" (with the same actor and
    event_id) and send it any way you like."""
    with handled(False):
        if (case is None) == (release is None):
            raise BadInput("give --case or --release")
        path = key or Settings().signing_key
        if path is None:
            raise BadInput("give --key or set CASES_SIGNING_KEY")
        try:
            span = Span.parse(ttl)
            signer = signing.Signer.from_file(path)
        except (SpanError, ValueError) as err:
            raise BadInput(str(err)) from None
        now = datetime.now(UTC)
        audience = case_workflow_id(case) if case else release_workflow_id(release or "")
        actor = Actor(role=role, name=name, institution=institution)
        typer.echo(signer.token(audience, actor, event_id, now, span.after(now) - now))
