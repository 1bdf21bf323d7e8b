"""Raw payload decoding for handlers that must see malformed input instead of losing it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from temporalio.common import RawValue

from workflows.contract import MAX_EVENT_BYTES


class Malformed(Exception):
    pass


def decode_object(
    args: Sequence[RawValue], what: str, limit: int | None = MAX_EVENT_BYTES
) -> dict[str, Any]:
    """The single JSON object a handler takes, or ``Malformed`` saying what is wrong with it.

    ``limit`` bounds what other systems may send; ``None`` is for what the workflow hands
    itself (the state a continued run carries), bounded by Temporal's own payload limit."""
    if len(args) != 1:
        raise Malformed(f"{what} takes exactly one JSON object, got {len(args)} arguments")
    if limit is not None:
        check_size(args, what, limit)
    payload = args[0].payload
    encoding = payload.metadata.get("encoding", b"")
    if encoding != b"json/plain":
        raise Malformed(
            f"{what} payload must be json/plain, not {encoding.decode(errors='replace') or 'none'}"
        )
    try:
        data = json.loads(payload.data)
    except ValueError:
        raise Malformed(f"{what} payload is not valid JSON") from None
    except RecursionError:
        # Deep nesting fits within the size limit; uncaught, it would fail every workflow task.
        raise Malformed(f"{what} payload nests too deeply") from None
    if not isinstance(data, dict):
        raise Malformed(f"{what} payload must be a JSON object, not {type(data).__name__}")
    # PostgreSQL's text cannot hold NUL: accepted, it fails every write of the case's effects.
    # JSON writes NUL only as an escape, so only a payload with that escape is walked.
    if b"\\u0000" in payload.data and _has_nul(data):
        raise Malformed(f"{what} payload contains a NUL character (\\u0000)")
    return data


def check_size(args: Sequence[RawValue], what: str, limit: int = MAX_EVENT_BYTES) -> None:
    """``Malformed`` if the payload is over ``limit`` bytes (the bound ``decode_object`` keeps)."""
    size = args[0].payload.ByteSize()
    if size > limit:
        raise Malformed(f"{what} payload is {size} bytes; the limit is {limit}")


def _has_nul(data: Any) -> bool:
    pending = [data]  # a loop, not recursion: the JSON may nest as deep as json.loads allows
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def explain(err: Exception) -> str:
    """A validation error as one readable line: ``field: problem; field: problem``."""
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors(include_url=False)[:5]:
            where = ".".join(str(p) for p in e["loc"]) or "payload"
            parts.append(f"{where}: {e['msg']}")
        return "; ".join(parts)
    return getattr(err, "message", None) or str(err)


def excerpt(args: Sequence[RawValue], size: int = 200) -> str | None:
    if not args:
        return None
    return args[0].payload.data[:size].decode("utf-8", errors="replace")
