"""An open backlog exported from another help desk, read into start inputs (README "Moving in").

A file is JSON lines (one start input with ``imported`` per line) or CSV with a header whose
columns are the start input's names, nested ones dotted (``imported.status``,
``imported.status_since``, ``opened_by.name``, ...; ``imported.history`` holds a JSON list). A
mapping file (``--map``, JSON) renames another help desk's columns and status names and gives
defaults for what the export lacks::

    {"columns": {"Ticket": "case_number", "State": "imported.status", ...},
     "statuses": {"Awaiting customer": "Pending Customer Response", ...},
     "defaults": {"product": "Alma", "opened_by.name": "zendesk import"}}

Every row becomes a ``CaseInput`` or a ``RowError`` naming its line; a bad row never stops the
others. Pure: no Temporal here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from workflows.contract import Actor, CaseInput, Role, Status
from workflows.payloads import explain

STATUSES = {str(s) for s in Status}
# What a row must give (after the mapping and its defaults), in the words of the error.
REQUIRED = (
    "case_number",
    "institution",
    "product",
    "priority",
    "title",
    "contact_email",
    "imported.status",
    "imported.status_since",
)


class BacklogError(ValueError):
    """The file or the mapping cannot be read at all (not one row of it)."""


class Mapping(BaseModel):
    columns: dict[str, str] = Field(default_factory=dict)
    statuses: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> Mapping:
        if path is None:
            return cls()
        try:
            mapping = cls.model_validate_json(path.read_text())
        except (OSError, ValidationError, ValueError) as err:
            raise BacklogError(f"mapping {path}: {explain(err)}") from None
        unknown = sorted(set(mapping.statuses.values()) - STATUSES)
        if unknown:
            raise BacklogError(f"mapping {path}: not a status of the guide: {', '.join(unknown)}")
        return mapping


@dataclass(frozen=True)
class Row:
    line: int  # the file's line the row starts on
    fields: dict[str, Any]


@dataclass(frozen=True)
class RowError:
    line: int
    case_number: str | None
    reason: str

    def __str__(self) -> str:
        case = f" ({self.case_number})" if self.case_number else ""
        return f"line {self.line}{case}: {self.reason}"


@dataclass(frozen=True)
class Parsed:
    line: int
    case: CaseInput


def read_rows(path: Path) -> Iterator[Row | RowError]:
    """The file's rows, JSON lines or CSV (by the first character: ``{`` is JSON)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BacklogError(f"{path}: {err}") from None
    if text.lstrip().startswith("{"):
        yield from _json_lines(text)
    else:
        yield from _csv(text)


def _json_lines(text: str) -> Iterator[Row | RowError]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as err:
            yield RowError(number, None, f"not JSON: {err}")
            continue
        if not isinstance(data, dict):
            yield RowError(number, None, "a line must be one JSON object")
            continue
        yield Row(number, _flat(data))


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"imported": {"status": ...}}`` as ``{"imported.status": ...}`` (lists stay whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in ("imported", "opened_by", "policy"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _csv(text: str) -> Iterator[Row | RowError]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    if not reader.fieldnames:
        raise BacklogError("the CSV file has no header")
    start = reader.line_num + 1
    for record in reader:
        if None in record:  # more cells than the header names
            yield RowError(start, record.get("case_number"), "more cells than the header has")
        else:
            cells = {k: v for k, v in record.items() if v is not None and v.strip() != ""}
            yield Row(start, cells)
        start = reader.line_num + 1


def to_case(row: Row, mapping: Mapping, importer: Actor) -> Parsed | RowError:
    """One row as a start input, or why it cannot be one."""
    fields = {mapping.columns.get(k, k): v for k, v in row.fields.items()}
    for name, value in mapping.defaults.items():
        fields.setdefault(name, value)
    number = fields.get("case_number")
    number = str(number) if number is not None else None
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        return RowError(row.line, number, f"missing {', '.join(missing)}")
    status = str(fields["imported.status"]).strip()
    status = mapping.statuses.get(status, status)
    if status not in STATUSES:
        return RowError(
            row.line, number, f"unknown status {status!r}: map it to one of the guide's (--map)"
        )
    fields["imported.status"] = status
    history = fields.get("imported.history")
    if isinstance(history, str):
        try:
            fields["imported.history"] = json.loads(history)
        except ValueError:
            return RowError(row.line, number, "imported.history is not a JSON list")
    if isinstance(fields.get("imported.history"), list):
        for entry in fields["imported.history"]:
            if isinstance(entry, dict):
                for key in ("from_status", "to_status"):
                    if entry.get(key) in mapping.statuses:
                        entry[key] = mapping.statuses[entry[key]]
    fields.setdefault("opened_by.role", str(Role.IMPORTER))
    fields.setdefault("opened_by.name", importer.name)
    try:
        return Parsed(row.line, CaseInput.model_validate(_nested(fields)))
    except ValidationError as err:
        return RowError(row.line, number, explain(err))


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, value in fields.items():
        head, _, rest = name.partition(".")
        if rest:
            data.setdefault(head, {})[rest] = value
        else:
            data[name] = value
    return data


def parse(path: Path, mapping: Mapping, importer: Actor) -> list[Parsed | RowError]:
    """Every row of the file, in order; a case number seen before is an error on its later
    rows (the first one stands)."""
    seen: dict[str, int] = {}
    out: list[Parsed | RowError] = []
    for row in read_rows(path):
        item = row if isinstance(row, RowError) else to_case(row, mapping, importer)
        if isinstance(item, Parsed):
            number = item.case.case_number
            if number in seen:
                item = RowError(
                    item.line, number, f"case number appears again (first on line {seen[number]})"
                )
            else:
                seen[number] = item.line
        out.append(item)
    return out
