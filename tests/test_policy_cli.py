"""``python -m starter policy ...`` against the session's dev server and the project's worker:
a dry run that changes nothing, an apply that changes twenty open cases (snapshots and the
store), a re-run that changes none, ``policy show``, and the errors a bad ``--set`` gets."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from activities import CaseStore
from tests import readme
from tests.scenario import TIER1, Case
from tests.test_cli import Cli, cli, cli_env, eventually  # noqa: F401 (fixtures)
from workflows.calendar import Span
from workflows.contract import DeadlineKind, Status, case_workflow_id

REASON = "the customer council asked for earlier reminders"


@pytest.fixture
def worker_settings(worker_settings: Any) -> Any:
    """conftest's worker, with an organisation's default policy: new cases close after 35 days."""
    return worker_settings.model_copy(update={"default_policy": "pcr_closing=35d"})


async def _open_waiting(env: Any, task_queue: str, numbers: list[str], institution: str) -> None:
    """Cases in Pending Customer Response: the reminder 14 days ahead, Closing 28."""

    async def one(number: str) -> None:
        case = Case(env, task_queue, number)
        await case.open(institution=institution, opened_by=TIER1)
        await case.walk((Status.TIER1_ANALYSIS, TIER1), (Status.PENDING_CUSTOMER_RESPONSE, TIER1))

    await asyncio.gather(*(one(n) for n in numbers))


async def _listed(cases: Any, query: str, count: int) -> None:
    """Visibility is eventually consistent: wait until the query finds every case waiting."""

    async def found() -> bool:
        rows = [r async for r in cases.find(query=query)]
        return len(rows) == count and all(
            r.status == Status.PENDING_CUSTOMER_RESPONSE for r in rows
        )

    await eventually(found, within=30)


async def test_dry_run_then_apply_then_a_rerun_on_twenty_cases(
    cli: Cli,  # noqa: F811
    env: Any,
    worker_settings: Any,
    case_worker: CaseStore,
    unique: Callable[[str], str],
) -> None:
    institution = unique("Policy University")
    numbers = sorted(unique(f"POL{i:02d}") for i in range(20))
    await _open_waiting(env, worker_settings.task_queue, numbers, institution)
    cases = Case(env, worker_settings.task_queue, numbers[0]).client
    query = f'CaseInstitution = "{institution}"'
    await _listed(cases, query, 20)
    before = {n: await cases.snapshot(n) for n in numbers}
    apply = ["policy", "apply", "--query", query, "--set", "pcr_reminder=3d", "--reason", REASON]

    # A dry run: each case's next deadline now and after the change; nothing changes.
    dry = await cli(*apply, "--dry-run")
    assert "dry run: 20 would change, 0 unchanged, 0 rejected; nothing was changed" in dry.stdout
    for number in numbers:
        line = next(row for row in dry.stdout.splitlines() if number in row)
        assert line.count("reminder to the customer") == 2, line
    as_json = json.loads((await cli(*apply, "--dry-run", "--json")).stdout)
    assert as_json["ok"] and as_json["dry_run"] and len(as_json["previews"]) == 20
    for preview in as_json["previews"]:
        since = before[preview["case_number"]].status_since
        assert preview["before"]["action"] == preview["after"]["action"] == "pcr_reminder"
        assert datetime.fromisoformat(preview["before"]["at"]) == since + timedelta(days=14)
        assert datetime.fromisoformat(preview["after"]["at"]) == since + timedelta(days=3)
    for number in numbers:
        snap = await cases.snapshot(number)
        assert snap.policy == before[number].policy
        assert snap.policy_changes == before[number].policy_changes
        assert snap.next_deadline == before[number].next_deadline

    # The change itself: every case's reminder now falls 3 days after it entered the status.
    applied = await cli(*apply, "--actor-role", "tier2", "--actor-name", "Tess Two")
    assert "pcr_reminder=3d: 20 applied, 0 unchanged, 0 rejected" in applied.stdout
    for number in numbers:
        snap = await cases.snapshot(number)
        assert snap.policy.pcr_reminder == Span(3, "d")
        assert snap.policy.pcr_closing == before[number].policy.pcr_closing
        assert snap.next_deadline is not None
        assert snap.next_deadline.action is DeadlineKind.PCR_REMINDER
        assert snap.next_deadline.at == snap.status_since + timedelta(days=3)
        # The organisation's default when the case opened, then this change.
        default, change = snap.policy_changes
        assert default.actor.role == "system"
        assert [(c.field, c.old, c.new) for c in default.changes] == [("pcr_closing", "28d", "35d")]
        assert (change.actor.role, change.actor.name) == ("tier2", "Tess Two")
        assert change.reason == REASON
        assert [(c.field, c.old, c.new) for c in change.changes] == [("pcr_reminder", "14d", "3d")]

    # The store keeps the same change, once per case (the persist activity writes it).
    async def stored() -> bool:
        rows = [await case_worker.policy_changes(n) for n in numbers]
        return all(len(r) == 2 for r in rows)

    await eventually(stored, within=20)
    _, row = await case_worker.policy_changes(numbers[0])
    assert (row.actor.role, row.actor.name, row.reason) == ("tier2", "Tess Two", REASON)
    assert [(c.field, c.old, c.new) for c in row.changes] == [("pcr_reminder", "14d", "3d")]

    # A re-run finds every case with the values already: no update is sent.
    again = await cli(*apply, "--actor-role", "tier2", "--actor-name", "Tess Two")
    assert "pcr_reminder=3d: 0 applied, 20 unchanged, 0 rejected" in again.stdout
    assert [len((await cases.snapshot(n)).policy_changes) for n in numbers] == [2] * 20

    # policy show: each field and where it came from, and the change with who, why, old → new.
    shown = (await cli("policy", "show", numbers[0])).stdout
    lines = shown.splitlines()
    reminder = next(line for line in lines if line.lstrip().startswith("pcr_reminder"))
    assert "3d" in reminder and "changed by tier2 Tess Two" in reminder
    closing = next(line for line in lines if line.lstrip().startswith("pcr_closing"))
    assert "35d" in closing and "the organisation's default (CASES_DEFAULT_POLICY)" in closing
    closed = next(line for line in lines if line.lstrip().startswith("closing_closed"))
    assert "14d" in closed and "the guide's default" in closed
    assert "Policy changes" in shown and REASON in shown and "pcr_reminder 14d → 3d" in shown
    data = json.loads((await cli("policy", "show", numbers[0], "--json")).stdout)
    assert data["policy"]["pcr_reminder"]["source"] == "change"
    assert data["policy"]["pcr_closing"]["source"] == "organisation"
    assert data["policy"]["closing_closed"] == {"value": "14d", "source": "guide", "seq": None}
    assert data["policy_changes"][-1]["changes"] == [
        {"field": "pcr_reminder", "old": "14d", "new": "3d"}
    ]


async def test_show_names_the_openers_override(
    cli: Cli,  # noqa: F811
    unique: Callable[[str], str],
) -> None:
    """Staff may set a deadline at open: it wins over the organisation's default, and only the
    fields named are the opener's."""
    number = unique("OPN")
    base = ["--institution", "Alma University", "--product", "Alma", "--title", "Import fails"]
    base += ["--contact", "ann@alma.example"]
    customer = await cli("open", number, *base, "--policy", "pcr_closing=20d", expect=2)
    assert "--policy is for staff: open with --as tier1" in customer.stderr
    await cli("open", number, *base, "--as", "tier1", "--policy", "pcr_closing=20d")
    data = json.loads((await cli("policy", "show", number, "--json")).stdout)
    assert data["policy"]["pcr_closing"] == {"value": "20d", "source": "opener", "seq": None}
    assert data["policy"]["pcr_reminder"] == {"value": "14d", "source": "guide", "seq": None}
    assert data["policy_changes"] == []  # the opener's 20d wins: the default changes nothing
    shown = (await cli("policy", "show", number)).stdout
    assert "set when the case was opened" in shown and "no policy changes" in shown


async def test_a_bad_set_names_the_field_and_the_bound(
    cli: Cli,  # noqa: F811
    env: Any,
    worker_settings: Any,
    unique: Callable[[str], str],
) -> None:
    institution = unique("Bounds College")
    number = unique("BAD")
    await _open_waiting(env, worker_settings.task_queue, [number], institution)
    cases = Case(env, worker_settings.task_queue, number).client
    query = f'CaseInstitution = "{institution}"'
    await _listed(cases, query, 1)
    apply = ["policy", "apply", "--query", query, "--reason", "bounds"]

    unknown = await cli(*apply, "--set", "pcr_remindr=3d", expect=2)
    assert "no policy field 'pcr_remindr'" in unknown.stderr and "pcr_reminder" in unknown.stderr
    too_long = await cli(*apply, "--set", "pcr_reminder=999999w", expect=2)
    assert "invalid input: --set: pcr_reminder is 999999w" in too_long.stderr
    assert "120 months (10 years)" in too_long.stderr
    not_a_span = await cli(*apply, "--set", "pcr_reminder=soon", expect=2)
    assert "--set: pcr_reminder: 'soon' is not a span" in not_a_span.stderr
    crossed = await cli(*apply, "--set", "pcr_reminder=30d", "--set", "pcr_closing=20d", expect=2)
    assert "--set: pcr_reminder (30d) must come before pcr_closing (20d)" in crossed.stderr

    nobody = ["--query", f'CaseInstitution = "{unique("Nobody")}"', "--reason", "r"]
    none = await cli("policy", "apply", *nobody, "--set", "pcr_reminder=3d")
    assert "no open case of task queue" in none.stdout and "0 applied" in none.stdout
    await cli("policy", "apply", "--query", "CaseStatus ==", "--set", "pcr_reminder=3d",
              "--reason", "r", expect=2)  # fmt: skip

    # Given alone, the reminder is checked against each case's own Closing: the case refuses.
    refused = await cli(*apply, "--set", "pcr_reminder=40d", expect=1)
    assert "0 applied, 0 unchanged, 1 rejected" in refused.stdout
    row = next(line for line in refused.stdout.splitlines() if number in line)
    assert "policy" in row and f"case {number} is in Pending Customer Response" in row
    assert "pcr_reminder (40d) must come before pcr_closing (35d)" in row
    previewed = await cli(*apply, "--set", "pcr_reminder=40d", "--dry-run", "--json", expect=1)
    [rejected] = json.loads(previewed.stdout)["rejected"]
    assert rejected["case_number"] == number
    assert "pcr_reminder (40d) must come before pcr_closing (35d)" in rejected["message"]

    snap = await cases.snapshot(number)
    assert snap.policy.pcr_reminder == Span(14, "d") and len(snap.policy_changes) == 1


async def test_the_readme_policy_block(
    cli: Cli,  # noqa: F811
    env: Any,
    worker_settings: Any,
    unique: Callable[[str], str],
) -> None:
    """README, "Changing the policy of open cases": the commands as written, on this test's
    worker (its task queue scopes the query to this test's cases)."""
    prefix = unique("RP").replace("-", "")
    number = readme.with_cases("00123456", prefix)
    await _open_waiting(env, worker_settings.task_queue, [number], "Alma University")
    cases = Case(env, worker_settings.task_queue, number).client
    await _listed(cases, f'WorkflowId = "{case_workflow_id(number)}"', 1)
    block = readme.commands(readme.with_cases(readme.example("policy"), prefix))
    lines = [line for line in block if not line.startswith("#")]
    assert [shlex.split(line, comments=True)[3:5] for line in lines] == [
        ["policy", "apply"],
        ["policy", "apply"],
        ["policy", "show"],
    ]
    results = [await cli(*shlex.split(line, comments=True)[3:]) for line in lines]
    assert "dry run: 1 would change, 0 unchanged, 0 rejected" in results[0].stdout
    assert "pcr_reminder=10d, pcr_closing=20d: 1 applied, 0 unchanged" in results[1].stdout
    assert "pcr_closing 35d → 20d" in results[2].stdout and "council decision" in results[2].stdout
    again = await cli(*shlex.split(lines[1], comments=True)[3:])
    assert "1 unchanged" in again.stdout
    snap = await cases.snapshot(number)
    assert snap.next_deadline is not None
    assert snap.next_deadline.at == snap.status_since + timedelta(days=10)
