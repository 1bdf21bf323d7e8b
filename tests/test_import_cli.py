"""Moving in, end to end: ``python -m starter import FILE`` against the real dev server, worker
and SMTP server. A 200-row export with bad rows mixed in: every good row becomes a case in its
status, every bad row is reported with its line, no mail goes out but what the clocks owe, and a
re-run changes nothing."""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from activities.mailer import message_id
from settings import Settings, policy_settings
from starter.backlog import REQUIRED
from starter.cli import app
from starter.client import CaseClient
from workflows import lifecycle
from workflows.contract import Actor, CaseInput, ImportedCase, Notify, Role, case_workflow_id

DAY = timedelta(days=1)
COLUMNS = [*REQUIRED, "imported.release_id", "imported.release_shipped_at", "imported.source"]
# (status, age, extra columns): the waiting statuses at ages on both sides of their clocks.
GOOD = [
    ("Pending Customer Response", 3 * DAY, {}),
    ("Pending Customer Response", 10 * DAY, {}),
    ("Pending Customer Response", 20 * DAY, {}),
    ("Pending Customer Response", 30 * DAY, {}),  # goes to Closing: the Closing notice
    ("Closing", 5 * DAY, {}),
    ("Closing", 20 * DAY, {}),  # closes: the Closed notice
    ("Pending Work Plan", 200 * DAY, {}),
    ("Pending Work Plan", 800 * DAY, {}),  # past its 24 months: Closing
    ("Tier 2 Analysis", 2 * DAY, {}),
    ("Development", 10 * DAY, {}),
    ("Pending Release", 30 * DAY, {"imported.release_id": "REL"}),
    ("Pending Customer Testing", 60 * DAY, {}),
]
GOOD_ROWS = 180


def bad_rows(now: datetime) -> list[tuple[dict[str, str], str]]:
    """Rows that must be refused, and a word of the reason each gets."""
    since = (now - DAY).isoformat()
    return [
        ({"title": "", "imported.status": "Tier 1 Analysis"}, "missing title"),
        ({"imported.status": "Awaiting customer"}, "unknown status"),
        (
            {
                "imported.status": "Tier 1 Analysis",
                "imported.status_since": (now + DAY).isoformat(),
            },
            "in the future",
        ),
        ({"imported.status": "Pending Work Plan", "priority": "high"}, "normal or low"),
        ({"imported.status": "Pending Release"}, "release_id"),
        ({"imported.status": "New"}, "past New"),
        ({"imported.status": "Tier 1 Analysis", "contact_email": "not an address"}, "contact"),
        (
            {"imported.status": "Tier 1 Analysis", "imported.status_since": "yesterday"},
            "status_since",
        ),
        (
            {"imported.status": "Tier 1 Analysis", "imported.status_since": since, "dup": "1"},
            "appears again",
        ),
    ]


def row(number: str, status: str, since: datetime, **extra: str) -> dict[str, str]:
    return {
        "case_number": number,
        "institution": "Alma University",
        "product": "Alma",
        "priority": "normal",
        "title": f"Case {number} from the old help desk",
        "contact_email": f"{number.lower()}@alma.example",
        "imported.status": status,
        "imported.status_since": since.isoformat(),
        "imported.source": f"zendesk #{number}",
        **extra,
    }


def export(path: Path, prefix: str, now: datetime) -> tuple[list[int], list[int]]:
    """The 200-row file; the line numbers of the good rows and of the bad ones."""
    rows: list[dict[str, str]] = []
    good, bad = [], []
    bads = iter(bad_rows(now) * 3)
    for n in range(GOOD_ROWS):
        status, age, extra = GOOD[n % len(GOOD)]
        extra = {k: v.replace("REL", f"{prefix}-rel") for k, v in extra.items()}
        rows.append(row(f"{prefix}-{n:03d}", status, now - age - timedelta(hours=1), **extra))
        good.append(len(rows) + 1)  # the header is line 1
        if n % 9 == 8:
            fields = dict(next(bads)[0])
            number = f"{prefix}-{n:03d}" if fields.pop("dup", None) else f"{prefix}-B{n:03d}"
            base = row(number, "Tier 1 Analysis", now - DAY)
            rows.append({**base, **fields})
            bad.append(len(rows) + 1)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return good, bad


def expected_mail(path: Path, now: datetime) -> tuple[set[str], dict[str, str]]:
    """What the pure core says the good rows owe: their Message-IDs and their statuses."""
    ids, statuses = set(), {}
    reader = csv.DictReader(path.open())
    policy = policy_settings(Settings())
    for fields in reader:
        try:
            imported = ImportedCase.model_validate(
                {
                    k.removeprefix("imported."): v
                    for k, v in fields.items()
                    if k.startswith("imported.") and v
                }
            )
            case = CaseInput.model_validate(
                {
                    **{k: v for k, v in fields.items() if "." not in k and v},
                    "opened_by": Actor(role=Role.IMPORTER, name="import"),
                    "imported": imported,
                }
            )
            outcome = lifecycle.imported_outcome(case, policy, now)
        except (ValueError, lifecycle.Rejection):
            continue
        if case.case_number in statuses:
            continue
        statuses[case.case_number] = str(outcome.state.status)
        ids |= {message_id(e.key) for e in outcome.effects if isinstance(e, Notify)}
    return ids, statuses


@pytest.fixture
def run_cli(case_worker: Any, env: Any, worker_settings: Any) -> Iterator[Any]:
    environ = {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "TEMPORAL_PROFILE": None,
        "CASES_TASK_QUEUE": worker_settings.task_queue,
        "COLUMNS": "200",
    }

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=environ)

    yield run


async def test_a_backlog_moves_in_with_its_clocks_and_a_rerun_changes_nothing(
    run_cli: Any, env: Any, worker_settings: Any, inbox: Any, unique: Any, tmp_path: Path
) -> None:
    prefix = unique("ZD").upper()
    now = datetime.now(UTC)
    path = tmp_path / "backlog.csv"
    good, bad = export(path, prefix, now)
    assert len(good) + len(bad) == 200

    dry = await run_cli("import", str(path), "--dry-run")
    assert dry.exit_code == 1, dry.stdout  # bad rows
    assert f"{len(good)} of 200 rows would be imported" in dry.stdout
    refusals = tmp_path / "backlog.csv.refused.txt"
    assert [int(line.split()[1]) for line in refusals.read_text().splitlines()] == bad

    first = await run_cli("import", str(path), "--concurrency", "16")
    assert first.exit_code == 1, first.stdout
    assert f"200 rows: {len(good)} imported" in first.stdout and "0 already there" in first.stdout
    lines = refusals.read_text().splitlines()
    assert [int(line.split()[1]) for line in lines] == bad
    words = [word for _, word in bad_rows(now)]
    assert all(any(w in line for w in words) for line in lines), lines

    # Every good row is a case in the status its clock says, and owes exactly what the core
    # says: no "opened" email, no reminder for the past.
    wanted, statuses = expected_mail(path, now)
    assert len(statuses) == len(good) and wanted
    cases = CaseClient(env.client, worker_settings.task_queue)
    for number, status in statuses.items():
        assert (await cases.snapshot(number)).status == status, number
    await inbox.wait_for(len(wanted), timeout=60)
    # The keys carry the opening run's id, which the core's own answer cannot know.
    got = {
        re.sub(r"\.[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "", str(m.message["Message-ID"]))
        for m in inbox.messages
    }
    assert got == wanted
    assert len(inbox.messages) == len(wanted)
    assert not inbox.matching(Subject="opened")

    async def events(number: str) -> int:
        handle = env.client.get_workflow_handle(case_workflow_id(number))
        return (await handle.describe()).raw_description.workflow_execution_info.history_length

    histories = {n: await events(n) for n in statuses}
    again = await run_cli("import", str(path))
    assert again.exit_code == 1
    assert "200 rows: 0 imported" in again.stdout
    assert f"{len(good)} already there" in again.stdout
    assert {n: await events(n) for n in statuses} == histories  # nothing started, nothing sent
    assert len(inbox.messages) == len(wanted)

    # The export without its bad rows: everything is there, exit 0.
    cleaned = tmp_path / "cleaned.csv"
    text = path.read_text().splitlines(keepends=True)
    cleaned.write_text("".join(t for i, t in enumerate(text, start=1) if i not in bad))
    done = await run_cli("import", str(cleaned))
    assert done.exit_code == 0, done.stdout
    assert f"{len(good)} already there, 0 refused" in done.stdout
