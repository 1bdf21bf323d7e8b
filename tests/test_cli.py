"""``python -m starter`` end to end: the Typer app against the session's dev server and the
project's worker; the README's command-line block as written; exit codes of the real process."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from starter.cli import app
from tests import readme
from workflows import lifecycle
from workflows.contract import Snapshot
from workflows.lifecycle import Via

ROOT = Path(__file__).resolve().parent.parent

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli_env(env: Any, worker_settings: Any) -> dict[str, str | None]:
    return {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "TEMPORAL_PROFILE": None,
        "CASES_TASK_QUEUE": worker_settings.task_queue,
        "COLUMNS": "400",  # no wrapping: tables and help read as one line per row
    }


@pytest.fixture
def cli(case_worker: Any, cli_env: dict[str, str | None]) -> Iterator[Cli]:
    """Run the CLI in a thread (it runs its own event loop) while the worker runs in ours.

    The worker's log lines go to the real stderr, not into the command's output (conftest).
    """
    runner = CliRunner()

    async def run(*args: str, expect: int = 0, env: dict[str, str | None] | None = None) -> Result:
        environ = {**cli_env, **(env or {})}
        result = await asyncio.to_thread(runner.invoke, app, list(args), env=environ)
        assert result.exit_code == expect, (
            f"{args}: exit {result.exit_code}, expected {expect}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
        )
        return result

    yield run


def test_a_worker_log_line_stays_out_of_a_commands_captured_output() -> None:
    """While a command runs, the runner has swapped ``sys.stdout`` for the whole process; a line
    an in-process worker's activity logs meanwhile must not land in the command's output."""
    with CliRunner().isolation() as (stdout, stderr, _):
        structlog.get_logger("activities.notify").info("notify.sent", to="ann@alma.example")
        captured = stdout.getvalue() + stderr.getvalue()
    assert b"notify.sent" not in captured


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Visibility is eventually consistent: ask again for a while."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "never became true"
        await asyncio.sleep(0.2)


async def test_open_show_transition_reject_and_list(cli: Cli, unique: Callable[[str], str]) -> None:
    number, institution = unique("CLI"), unique("Alma University")
    opened = await cli(
        "open", number, "--institution", institution, "--product", "Alma",
        "--title", "Loans report shows wrong totals", "--contact", "ann@alma.example",
    )  # fmt: skip
    assert f"opened case {number} · {institution} · normal" in opened.stdout

    shown = await cli("show", number)
    assert (
        f"Case {number} · {institution} · normal — Loans report shows wrong totals" in shown.stdout
    )
    assert "New" in shown.stdout and "(opened) → New" in shown.stdout
    assert "none: waiting for people" in shown.stdout

    moved = await cli("transition", number, "tier 1 analysis")  # any letter case will do
    assert f"case {number}: New → Tier 1 Analysis" in moved.stdout
    as_json = await cli(
        "transition", number, "Pending Customer Response", "--note", "send the log", "--json"
    )
    snap = Snapshot.model_validate_json(as_json.stdout)
    assert snap.status == "Pending Customer Response"
    assert snap.next_deadline is not None and snap.next_deadline.action == "pcr_reminder"
    assert snap.history[-1].note == "send the log" and snap.history[-1].actor.role == "tier1"

    shown = await cli("show", number)
    assert "reminder to the customer" in shown.stdout  # next deadline and the timeline
    assert "Timeline if nobody acts" in shown.stdout and "→ Closing" in shown.stdout

    rejected = await cli("transition", number, "Development", expect=1)
    assert rejected.stdout == ""
    assert "rejected (not_allowed)" in rejected.stderr
    assert f"case {number} is in Pending Customer Response" in rejected.stderr
    assert "Development" in rejected.stderr
    rejected = await cli("transition", number, "Development", "--json", expect=1)
    assert json.loads(rejected.stdout)["reason"] == "not_allowed"

    async def listed() -> bool:
        found = await cli(
            "list", "--status", "Pending Customer Response", "--institution", institution
        )
        return number in found.stdout and "1 case(s)" in found.stdout

    await eventually(listed)
    rows = json.loads(
        (await cli("list", "--status", "Pending Customer Response", "--institution", institution,
                   "--json")).stdout
    )  # fmt: skip
    assert [(r["case_number"], r["status"], r["owner_tier"]) for r in rows] == [
        (number, "Pending Customer Response", "1")
    ]
    listed_deadline = datetime.fromisoformat(rows[0]["next_deadline"])
    assert abs(listed_deadline - snap.next_deadline.at) < timedelta(milliseconds=1)
    none = await cli("list", "--status", "Closing", "--institution", institution, "--json")
    assert json.loads(none.stdout) == []


async def test_reply_and_handoff(cli: Cli, unique: Callable[[str], str]) -> None:
    number = unique("HND")
    await cli(
        "open", number, "--institution", "Alma University", "--product", "Alma",
        "--title", "Import fails", "--contact", "ann@alma.example", "--as", "tier1",
    )  # fmt: skip
    await cli("transition", number, "Tier 1 Analysis")
    handed = await cli("handoff", number, "2", "--reason", "consult", "--note", "please look")
    assert "Tier 1 Analysis → Tier 2 New" in handed.stdout and "owner Tier 2" in handed.stdout
    bad = await cli("handoff", number, "2", "--reason", "boredom", expect=2)
    assert "consult, deeper_analysis, defect_verification" in bad.stderr
    # No reply transition from Tier 2 New: kept as a comment, the status stays.
    replied = await cli("reply", number, "Any news?", "--json")
    assert Snapshot.model_validate_json(replied.stdout).status == "Tier 2 New"
    wrong = await cli("reply", number, "me too", "--institution", "Other College", expect=1)
    assert "rejected (wrong_institution)" in wrong.stderr


async def test_bad_input_and_unreachable_exit_codes(
    cli: Cli, unique: Callable[[str], str], unused_port: int
) -> None:
    base = ["--institution", "A", "--product", "p", "--title", "t", "--contact", "a@b.example"]
    bad_number = await cli("open", "no spaces!", *base, expect=2)
    assert "invalid input: case_number" in bad_number.stderr
    bad_policy = await cli("open", unique("P"), *base, "--policy", "pcr_reminder=soon", expect=2)
    assert "is not a span" in bad_policy.stderr
    no_key = await cli("open", unique("P"), *base, "--policy", "nonsense", expect=2)
    assert "--policy takes KEY=SPAN" in no_key.stderr
    await cli("transition", unique("P"), "Nowhere", expect=2)  # not a transition target

    missing = await cli("show", unique("NOPE"), expect=3)
    assert "no case" in missing.stderr
    down = await cli("show", "X", expect=3, env={"TEMPORAL_ADDRESS": f"127.0.0.1:{unused_port}"})
    assert f"cannot reach Temporal at 127.0.0.1:{unused_port}" in down.stderr


async def test_transition_help_is_the_table(cli_env: dict[str, str | None]) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["transition", "--help"], env=cli_env)
    assert result.exit_code == 0
    for status in lifecycle.targets(Via.TRANSITION):
        assert status in result.stdout
    # The owner tier's analyst sets Pending Release, Development alone decides Pending Work Plan.
    assert (
        "• Development → Pending Release: tier1, tier2 "
        "(the Support analyst that owns the case; needs release_id)" in result.stdout
    )
    assert "• Development → Pending Work Plan: development (Development decides;" in result.stdout
    assert "Tier 2 Analysis, Development → Pending Work Plan" not in result.stdout
    assert "• Closing → Pending Customer Testing: customer" in result.stdout


async def test_the_readme_command_line_block(cli: Cli, unique: Callable[[str], str]) -> None:
    block = readme.with_cases(readme.example("cli"), unique("RD").replace("-", ""))
    lines = readme.commands(block)
    assert len(lines) >= 8
    for line in lines:
        words = shlex.split(line, comments=True)
        assert words[:3] == ["python", "-m", "starter"], line
        await cli(*words[3:], expect=1 if "exit 1" in line else 0)


async def test_release_commands(cli: Cli, unique: Callable[[str], str]) -> None:
    release = unique("2026.12")
    scheduled = await cli("release", "schedule", release, "--in", "1h")
    assert f"release {release} ships at" in scheduled.stdout
    status = json.loads((await cli("release", "status", release, "--json")).stdout)
    assert status["ships_at"] and status["shipped_at"] is None
    await cli("release", "ship-now", release)

    async def shipped() -> bool:
        data = json.loads((await cli("release", "status", release, "--json")).stdout)
        return data["shipped_at"] is not None

    await eventually(shipped)
    await cli("release", "status", unique("nope"), expect=3)
    naive = await cli("release", "schedule", release, "--at", "2026-12-01T06:00:00", expect=2)
    assert "needs an offset" in naive.stderr


async def test_demo_opens_cases_in_every_kind_of_wait(
    cli: Cli, env: Any, worker_settings: Any
) -> None:
    result = await cli("demo", "--json")
    data = json.loads(result.stdout)
    numbers = [number for number, _ in data["cases"]]
    assert len(numbers) == 6
    from starter.client import CaseClient

    cases = CaseClient(env.client, worker_settings.task_queue)
    statuses = [(await cases.snapshot(n)).status for n in numbers]
    assert statuses == [
        "Pending Customer Response",
        "Closing",
        "Pending Release",
        "Pending Work Plan",
        "Waiting for Process",
        "Tier 2 W4I",
    ]
    snap = await cases.snapshot(numbers[0])
    assert str(snap.policy.pcr_reminder) == "1min"  # deadlines in minutes
    assert snap.next_deadline is not None
    assert (snap.next_deadline.at - snap.status_since).total_seconds() == 60


async def test_demo_waits_for_a_worker_that_starts_after_it(
    env: Any, worker_settings: Any, cli_env: dict[str, str | None]
) -> None:
    """``make run``, and at once ``python -m starter demo``: the demo waits, a spinner on stderr,
    until the worker polls; then it opens its cases."""
    from activities import CaseStore, upgrade
    from worker import build_worker

    # As in a terminal, so the spinner shows (on stderr; the JSON on stdout stays clean).
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    environ = {k: v for k, v in {**os.environ, **cli_env, **terminal}.items() if v is not None}
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "demo", "--json", cwd=ROOT, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert demo.stderr is not None
    shown = b""
    while b"waiting up to" not in shown:
        chunk = await asyncio.wait_for(demo.stderr.read(4096), 60)
        assert chunk, f"the demo ended without waiting for a worker: {shown.decode()}"
        shown += chunk
    assert f"for a worker to poll task queue {worker_settings.task_queue}".encode() in shown

    await upgrade(worker_settings.database_url)
    store = CaseStore(worker_settings.database_url)
    try:
        async with build_worker(env.client, worker_settings, store):
            stdout, stderr = await asyncio.wait_for(demo.communicate(), 120)
    finally:
        await store.dispose()
    assert demo.returncode == 0, stderr.decode()
    assert len(json.loads(stdout)["cases"]) == 6


async def test_demo_without_a_worker_gives_up_after_the_wait(
    cli_env: dict[str, str | None], unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker at all: the demo says so, exit 3, once ``POLLER_WAIT`` has passed."""
    from runtime import pollers

    monkeypatch.setattr(pollers, "POLLER_WAIT", 2.0)
    nobody = unique("tq-nobody")
    started = asyncio.get_running_loop().time()
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["demo"], env={**cli_env, "CASES_TASK_QUEUE": nobody}
    )
    took = asyncio.get_running_loop().time() - started
    assert result.exit_code == 3, result.stderr
    assert f"no worker polls task queue {nobody}: start one first (make run)" in result.stderr
    assert 2.0 <= took < 2.0 + 15.0, took  # the wait, plus connecting on a busy machine


async def test_db_upgrade(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    done = await cli("db", "upgrade", env={"CASES_DATABASE_URL": url})
    assert "case store up to date" in done.stdout
    assert (tmp_path / "store.db").stat().st_size > 0


async def test_python_m_starter_exits_with_the_codes(
    case_worker: Any, cli_env: dict[str, str | None], unique: Callable[[str], str]
) -> None:
    """The real process: exit codes survive the interpreter's exit (see ``starter.cli.main``)."""
    environ = {k: v for k, v in {**os.environ, **cli_env}.items() if v is not None}

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starter", *args, cwd=ROOT, env=environ,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    number = unique("PROC")
    code, _ = await run(
        "open", number, "--institution", "Alma University", "--product", "Alma",
        "--title", "t", "--contact", "ann@alma.example",
    )  # fmt: skip
    assert code == 0
    code, err = await run("transition", number, "Closed")
    assert code == 1 and "rejected (not_allowed)" in err


def test_show_prints_when_a_late_deadline_was_due(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadline that acted after an outage: its history row shows when it acted and was due."""
    monkeypatch.setenv("COLUMNS", "300")  # one line per row
    from starter.render import render_snapshot
    from workflows.contract import Actor, DeadlinePolicy, HistoryEntry

    opened = datetime.fromisoformat("2026-12-01T09:00:00+00:00")
    due = opened + timedelta(days=28)
    acted = due + timedelta(days=20)
    system = Actor(role="system", name="lifecycle")
    snap = Snapshot(
        case_number="LATE-1", status="Closing", status_since=acted, owner_tier=1,
        priority="normal", institution="Alma University", product="Alma", title="t",
        release_id=None, release_shipped_at=None, next_deadline=None, timeline=[],
        history=[
            HistoryEntry(seq=1, from_status=None, to_status="New", at=opened, actor=system),
            HistoryEntry(
                seq=2, from_status="Pending Customer Response", to_status="Closing", at=acted,
                actor=system, note="deadline pcr_closing", due=due,
            ),
        ],
        rejected=[], policy=DeadlinePolicy(), opened_at=opened,
    )  # fmt: skip
    render_snapshot(snap)
    row = next(line for line in capsys.readouterr().out.splitlines() if "→ Closing" in line)
    assert "2027-01-18 09:00:00 UTC (due 2026-12-29 09:00:00 UTC)" in row


async def test_a_case_number_is_opened_once_for_all_time(
    cli: Cli, unique: Callable[[str], str]
) -> None:
    number = unique("ONCE")
    base = ["--institution", "Alma University", "--product", "Alma", "--title", "t"]
    await cli("open", number, *base, "--contact", "ann@alma.example", "--as", "tier1")
    again = await cli("open", number, *base, "--contact", "bob@alma.example", expect=1)
    assert f"case {number} exists (open); open a new case that references it" in again.stderr
    await cli("transition", number, "Tier 1 Analysis")
    await cli("transition", number, "Closing")
    await cli("transition", number, "Closed", "--as", "customer")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    answer = ""

    async def refused_as_closed() -> bool:
        nonlocal answer
        reused = await cli("open", number, *base, "--contact", "eve@evil.example", expect=1)
        answer = reused.stderr
        return "closed on" in answer

    await eventually(refused_as_closed)
    assert "rejected (duplicate)" in answer
    assert f"case {number} exists (closed on {today}); open a new case that references it" in answer
