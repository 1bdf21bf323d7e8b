"""``python -m starter release ...`` against the session's dev server and the project's worker:
release trains (Temporal Schedules), a fan-out followed with a progress bar, the release list;
and the README's ops recipe, a bulk signal with Temporal's own CLI."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from runtime.connection import temporal_cli
from starter.cli import app
from starter.schedules import delete_train, list_trains
from tests import readme
from tests.releases import register, wait_release
from tests.scenario import TIER1, TIER2, Case

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli(case_worker: Any, env: Any, worker_settings: Any) -> Iterator[Cli]:
    """The Typer app in a thread (it runs its own event loop) while the worker runs in ours;
    the worker's log lines go to the real stderr, not into the CLI's captured output."""
    runner = CliRunner()
    environ = {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "TEMPORAL_PROFILE": None,
        "CASES_TASK_QUEUE": worker_settings.task_queue,
        "COLUMNS": "300",
    }

    async def run(*args: str, expect: int = 0) -> Result:
        result = await asyncio.to_thread(runner.invoke, app, list(args), env=environ)
        assert result.exit_code == expect, (
            f"{args}: exit {result.exit_code}, expected {expect}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
        )
        return result

    yield run


async def test_a_release_train_is_scheduled_listed_and_refused_twice(
    cli: Cli, env: Any, unique: Callable[[str], str]
) -> None:
    name = unique("train")
    made = await cli(
        "release", "schedule", name, "--calendar", "monthly", "--ships-after", "14d",
        "--release-format", f"{name}-%Y.%m",
    )  # fmt: skip
    out = made.stdout
    assert f"release train {name}: schedule release-train-{name}" in out
    assert "day_of_month=1 hour=6 (UTC)" in out
    assert f"opens release {name}-" in out and "-15 06:00:00 UTC" in out  # ships on the 15th

    again = await cli("release", "schedule", name, "--calendar", "weekly", expect=2)
    assert "exists" in again.stderr
    replaced = await cli(
        "release", "schedule", name, "--calendar", "day_of_week=fri hour=16", "--replace",
        "--release-format", f"{name}-%Y.%m.%d", "--json",
    )  # fmt: skip
    data = json.loads(replaced.stdout)
    assert data["calendar"] == "day_of_week=fri hour=16" and data["ships_after"] is None
    fire = datetime.fromisoformat(data["next_fires"][0])
    assert fire.weekday() == 4 and fire.hour == 16  # a Friday, 16:00 UTC
    assert data["next_release"] == {
        "release_id": f"{name}-{fire:%Y.%m.%d}",
        "ships_at": fire.isoformat(),
    }

    bad = await cli("release", "schedule", name, "--calendar", "hour=25", expect=2)
    assert "hour=25: must be 0..23" in bad.stderr
    bad = await cli("release", "schedule", name, "--calendar", "monthly", "--in", "1d", expect=2)
    assert "--calendar" in bad.stderr

    for _ in range(100):  # Temporal lists schedules eventually
        if any(t.train == name for t in await list_trains(env.client)):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"train {name} never listed")
    listed = json.loads((await cli("release", "list", "--json")).stdout)
    [train] = [t for t in listed["trains"] if t["train"] == name]
    assert train["schedule_id"] == f"release-train-{name}" and not train["paused"]
    table = (await cli("release", "list")).stdout
    assert "Release trains" in table and name in table and "day_of_week=fri hour=16" in table
    await delete_train(env.client, name)


async def test_status_follows_the_fan_out_with_a_progress_bar(
    cli: Cli, env: Any, worker_settings: Any, unique: Callable[[str], str]
) -> None:
    release = unique("2028.01")
    await cli("release", "schedule", release, "--in", "30d")
    # 40 cases that closed since they registered: told nothing, skipped without an error
    await register(
        env.client, worker_settings.task_queue, release, [unique(f"gone{i}") for i in range(40)]
    )
    await wait_release(env.client, release, lambda s: s.cases_registered == 40)
    waiting = await cli("release", "status", release)
    assert "not yet" in waiting.stdout and "40" in waiting.stdout

    await cli("release", "ship-now", release)
    watched = await cli("release", "status", release, "--watch")
    assert f"release {release} shipped" in watched.stdout
    assert "40/40 cases told" in watched.stdout
    assert re.search(r"cases to tell +0", watched.stdout)

    listed = json.loads((await cli("release", "list", "--json")).stdout)
    [row] = [r for r in listed["releases"] if r["release_id"] == release]
    assert row["cases_notified"] == 40 and row["shipped_at"] is not None
    assert release in (await cli("release", "list")).stdout


async def test_the_ops_recipe_signals_every_waiting_case_with_temporal_s_cli(
    env: Any, case_worker: Any, worker_settings: Any, unique: Callable[[str], str]
) -> None:
    """README, Releases: without the Release workflow, Temporal's batch signal reaches every
    case of a release that waits in Pending Release, and only those."""
    release = unique("2028.02")
    waiting = [Case(env, worker_settings.task_queue, unique(f"ops{i}")) for i in range(3)]
    elsewhere = Case(env, worker_settings.task_queue, unique("dev"))
    for case in [*waiting, elsewhere]:
        await case.open()
        await case.to("Tier 1 Analysis", TIER1)
        await case.handoff(2, "defect_verification", TIER1)
        await case.walk(("Tier 2 Analysis", TIER2), ("Development", TIER2))
    for case in waiting:
        # The Support analyst that owns the case (Tier 2, after the handoff) sets Pending Release.
        await case.to("Pending Release", TIER2, release_id=release)

    query = f'CaseRelease = "{release}" AND CaseStatus = "Pending Release"'
    shipped_at = datetime.now(UTC).replace(microsecond=0)

    async def count() -> int:
        return (await env.client.count_workflows(query)).count

    for _ in range(100):  # the batch job reads visibility, which is eventually consistent
        if await count() == len(waiting):
            break
        await asyncio.sleep(0.1)
    # The README's command as written, for this test's release, instant and server.
    [line] = readme.commands(readme.example("release-batch-signal"))
    line = line.replace("2026.12", release).replace(
        "2026-12-01T06:00:00+00:00", shipped_at.isoformat()
    )
    words = shlex.split(line)
    assert words[:3] == ["temporal", "workflow", "signal"] and query in words
    address = env.client.service_client.config.target_host
    command = [temporal_cli(), *words[1:], "--address", address]
    command += ["--namespace", env.client.namespace]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    for case in waiting:
        snap = await case.wait(lambda s: s.release_shipped_at is not None)
        assert snap.release_shipped_at == shipped_at and snap.next_deadline is not None
    assert (await elsewhere.settle(0.5)).release_shipped_at is None
    assert not (await elsewhere.snapshot()).rejected
