"""What the command line shares: exit codes, error mapping, consoles, formatting.

Exit codes (scripts depend on them): 0 done; 1 the case rejected the event (reason code and
message on stderr); 2 bad usage or input (the validation error on stderr); 3 Temporal cannot be
reached, or no such case or release.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from temporalio.service import RPCError, RPCStatusCode

from runtime.connection import SearchAttributeProblem, TemporalUnavailable
from starter.client import BadQuery, CaseNotFound, CaseRejected
from workflows.payloads import explain


class BadInput(ValueError):
    """An option the command cannot use (a malformed ``--policy`` item, say)."""


class Code(IntEnum):
    OK = 0
    REJECTED = 1
    USAGE = 2
    UNAVAILABLE = 3


def out() -> Console:
    # Made per call, so a test runner's swapped streams are honoured.
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    """JSON for scripts on stdout: a model, a list of models, or plain data."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    elif isinstance(value, list) and all(isinstance(v, BaseModel) for v in value):
        text = json.dumps([v.model_dump(mode="json") for v in value], indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    sys.stdout.write(text + "\n")


def fail(code: Code, message: str, *, as_json: bool = False, **fields: Any) -> NoReturn:
    """Print one line on stderr (and a JSON object on stdout for scripts); exit with ``code``."""
    err().print(f"[bold red]error:[/] {safe(message)}", markup=True, highlight=False)
    if as_json:
        emit_json({"ok": False, "error": code.name.lower(), "message": message, **fields})
    raise typer.Exit(int(code))


@contextmanager
def handled(as_json: bool = False) -> Iterator[None]:
    """Turn what can go wrong into its exit code and a one-line message."""
    try:
        yield
    except CaseRejected as rejected:
        fail(
            Code.REJECTED,
            f"rejected ({rejected.reason}): {rejected}",
            as_json=as_json,
            reason=rejected.reason,
        )
    except ValidationError as invalid:
        fail(Code.USAGE, f"invalid input: {explain(invalid)}", as_json=as_json)
    except (BadInput, BadQuery) as invalid:
        fail(Code.USAGE, f"invalid input: {invalid}", as_json=as_json)
    except CaseNotFound as missing:
        fail(Code.UNAVAILABLE, str(missing), as_json=as_json)
    except (TemporalUnavailable, SearchAttributeProblem) as unavailable:
        fail(Code.UNAVAILABLE, str(unavailable), as_json=as_json)
    except RPCError as rpc:
        code = (
            Code.USAGE
            if rpc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION)
            else Code.UNAVAILABLE
        )
        fail(code, f"Temporal answered {rpc.status.name}: {rpc.message}", as_json=as_json)


# Terminal control characters (C0 but tab and newline, DEL, C1) and the bidirectional overrides
# that reorder what a terminal shows: never printed from case text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: object) -> str:
    """Case text (a title, a name, a note) as Rich prints it: literally, whatever brackets it
    holds (``[/bold]`` would crash the markup parser), and with no terminal control character."""
    return escape(_CONTROL.sub("", str(text)))


def when(instant: datetime | None) -> str:
    """An instant as people read it in a table: UTC, to the second."""
    if instant is None:
        return "—"
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(instant: datetime | None, now: datetime | None = None) -> str:
    """``in 3 min`` / ``5 h ago``: how far an instant is from now."""
    if instant is None:
        return ""
    seconds = (instant - (now or datetime.now(UTC))).total_seconds()
    size = abs(seconds)
    for unit, span in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if size >= span:
            text = f"{size / span:.0f} {unit}"
            break
    else:
        text = f"{size:.0f} s"
    return f"in {text}" if seconds >= 0 else f"{text} ago"
