"""Every history under ``tests/histories/`` (real runs of every workflow scenario, captured by
``tests/reliability/capture_histories.py``) replays against today's workflow code with the
SDK's ``Replayer``: a change that would break a running case (a case lives up to two years)
fails here, before it is deployed. A deliberately non-deterministic copy of the workflow shows
that the guard is real."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from runtime.sandbox import workflow_runner
from tests.reliability.changed_workflows import (
    PATCH,
    SupportCaseChanged,
    SupportCaseDeprecated,
    SupportCasePatched,
    SupportCaseWithAnExtraTimer,
)
from tests.reliability.harness import Tally
from tests.scenario import TIER1, Case
from worker import build_worker
from workflows.case import SupportCase
from workflows.contract import case_workflow_id, release_workflow_id
from workflows.release import Release

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
FILES = sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    history = WorkflowHistory.from_json(path.stem, data)
    return WorkflowHistory(original_workflow_id(history) or path.stem, history.events)


def original_workflow_id(history: WorkflowHistory) -> str | None:
    """The id the run had (a capture keeps only its events): a case or release checks it."""
    started = history.events[0].workflow_execution_started_event_attributes
    data = json.loads(started.input.payloads[0].data) if started.input.payloads else None
    if not isinstance(data, dict):
        return None
    data = data.get("carried", data)
    if "case" in data:
        data = data["case"]
    if "case_number" in data:
        return case_workflow_id(str(data["case_number"]))
    if "release_id" in data:
        return release_workflow_id(str(data["release_id"]))
    return None


def replayer(*workflows: type) -> Replayer:
    """A replayer set up as the worker is (pydantic payloads, the same sandbox passthrough)."""
    return Replayer(
        workflows=list(workflows),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(sandboxed=True),
    )


def workflow_type(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return started.workflow_type.name


def test_the_captured_histories_cover_every_scenario() -> None:
    scenarios = {p.name.split(".")[0] for p in FILES}
    modules = {p.stem.removeprefix("test_") for p in HISTORIES.parent.glob("test_case_*.py")}
    assert modules <= scenarios, f"no captured history for {sorted(modules - scenarios)}"
    kinds = Counter(workflow_type(load(p)) for p in FILES)
    assert kinds["SupportCase"] >= 10 and kinds["Release"] >= 1, kinds
    size = sum(p.stat().st_size for p in FILES)
    assert size < 1_800_000, f"keep the histories small ({size} bytes)"


def test_one_baseline_every_captured_case_records_no_patch() -> None:
    # No run of the product predates today's shape: a history with a patch marker is of a
    # shape the code no longer has a branch for.
    histories = {p.name: load(p) for p in FILES}
    assert all(".before-" not in name for name in histories)
    assert {name: patches(h) for name, h in histories.items() if patches(h)} == {}


def patches(history: WorkflowHistory) -> set[str]:
    """The patch ids the run recorded (``workflow.patched`` markers)."""
    found = set()
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes"):
            for payload in event.marker_recorded_event_attributes.details["patch-data"].payloads:
                found.add(json.loads(payload.data)["id"])
    return found


async def test_every_captured_history_replays(tally: Tally) -> None:
    histories = [load(p) for p in FILES]
    results = await replayer(SupportCase, Release).replay_workflows(
        _iterate(histories), raise_on_replay_failure=False
    )
    failures = {run_id: str(err) for run_id, err in results.replay_failures.items()}
    assert not failures, failures
    tally.cases = len(histories)
    events = sum(len(h.events) for h in histories)
    tally.notes = f"{len(histories)} histories, {events} events, replayed without a difference"


async def _iterate(histories: list[WorkflowHistory]) -> Any:
    for history in histories:
        yield history


# ---- the guard is real: a non-deterministic change fails the replay -------------------------


def opened(history: WorkflowHistory) -> bool:
    """The run opened its case (its first command is the policy read), not continued one."""
    started = history.events[0].workflow_execution_started_event_attributes
    return not started.continued_execution_run_id


def case_histories() -> list[Path]:
    """The three longest histories of runs that opened their case, as captured."""
    cases = [p for p in FILES if workflow_type(load(p)) == "SupportCase" and opened(load(p))]
    return sorted(cases, key=lambda p: -len(load(p).events))


@pytest.mark.parametrize("path", case_histories()[:3], ids=lambda p: p.stem)
async def test_a_non_deterministic_change_fails_the_replay(path: Path) -> None:
    with pytest.raises(workflow.NondeterminismError):
        await replayer(SupportCaseWithAnExtraTimer, Release).replay_workflow(load(path))


@pytest.mark.parametrize("path", case_histories()[:3], ids=lambda p: p.stem)
async def test_the_same_change_behind_a_patch_replays(path: Path) -> None:
    await replayer(SupportCasePatched, Release).replay_workflow(load(path))


# ---- a change on its way in: patch, deprecate, remove (README "Changing the workflow") -----


async def run_a_case(env: Any, settings: Any, store: Any, edition: type, number: str) -> Any:
    """A case opened and moved on a worker running ``edition``: its history so far."""
    async with build_worker(env.client, settings, store, workflows=[edition, Release]):
        case = Case(env, settings.task_queue, number)
        await case.open()
        await case.to("Tier 1 Analysis", TIER1)
        history = await case.handle.fetch_history()
        await case.handle.terminate("the history is what the test needs")
    return WorkflowHistory(case.handle.id, history.events)


async def replays(edition: type, history: WorkflowHistory) -> bool:
    result = await replayer(edition, Release).replay_workflow(
        history, raise_on_replay_failure=False
    )
    return result.replay_failure is None


async def still_open(env: Any, task_queue: str, before: datetime) -> int:
    """What tells that a deploy's time has come: open cases whose run started before the last
    one (the README's query; visibility lags by milliseconds, so it is read until it settles)."""
    query = (
        f'WorkflowType = "SupportCase" AND ExecutionStatus = "Running" '
        f'AND TaskQueue = "{task_queue}" AND StartTime < "{before.isoformat()}"'
    )
    return (await env.client.count_workflows(query)).count


async def test_a_change_goes_in_by_patch_then_deprecation_then_removal(
    env: Any, worker_settings: Any, store: Any, unique: Any
) -> None:
    today = await run_a_case(env, worker_settings, store, SupportCase, unique("today"))
    assert not await replays(SupportCaseWithAnExtraTimer, today), "unpatched, it breaks"

    # Deploy 1, the patch: today's runs replay, new runs record the marker.
    assert await replays(SupportCasePatched, today)
    patched = await run_a_case(env, worker_settings, store, SupportCasePatched, unique("p"))
    assert patches(patched) == {PATCH}
    assert await replays(SupportCasePatched, patched)

    # Deploy 2, the deprecation: only once no run of today's shape is open.
    assert not await replays(SupportCaseDeprecated, today)
    assert await replays(SupportCaseDeprecated, patched)
    deprecated = await run_a_case(env, worker_settings, store, SupportCaseDeprecated, unique("d"))
    assert await replays(SupportCaseDeprecated, deprecated)

    # Deploy 3, the removal: only once no run from before deploy 2 is open.
    assert not await replays(SupportCaseChanged, patched)
    assert await replays(SupportCaseChanged, deprecated)
    assert await replays(
        SupportCaseChanged,
        await run_a_case(env, worker_settings, store, SupportCaseChanged, unique("c")),
    )


async def test_the_query_that_says_a_deploy_s_time_has_come(
    env: Any, worker_settings: Any, store: Any, unique: Any
) -> None:
    async with build_worker(env.client, worker_settings, store):
        case = Case(env, worker_settings.task_queue, unique("old"))
        await case.open()
        deployed = datetime.now(UTC) + timedelta(seconds=1)

        async def counted(expected: int) -> None:
            while await still_open(env, worker_settings.task_queue, deployed) != expected:
                await asyncio.sleep(0.1)

        await asyncio.wait_for(counted(1), 10)  # a run from before the deploy: not yet
        await case.handle.terminate("closed, say")
        await asyncio.wait_for(counted(0), 10)  # none left: the next step may go out
