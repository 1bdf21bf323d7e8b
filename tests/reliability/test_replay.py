"""Every history under ``tests/histories/`` (real runs of every workflow scenario, captured by
``tests/reliability/capture_histories.py``) replays against today's workflow code with the
SDK's ``Replayer``: a change that would break a running case (a case lives up to two years)
fails here, before it is deployed. A deliberately non-deterministic copy of the workflow shows
that the guard is real."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tests.reliability.changed_workflows import SupportCasePatched, SupportCaseWithAnExtraTimer
from tests.reliability.harness import Tally
from worker import PASSTHROUGH
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
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
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
    for shape in {shape_of(p) for p in FILES}:
        size = sum(p.stat().st_size for p in FILES if shape_of(p) == shape)
        assert size < 1_800_000, f"keep the histories small ({shape}: {size} bytes)"


def shape_of(path: Path) -> str:
    """``today`` for a capture of today's code, else the patch it was captured before."""
    _, before, patch = path.stem.partition(".before-")
    return patch if before else "today"


def test_histories_from_before_each_patch_are_kept_beside_todays() -> None:
    # Cases started before the patch are still open somewhere: their shape must go on replaying.
    shapes = Counter(shape_of(p) for p in FILES)
    assert shapes["today"] >= 10 and shapes["effect-lanes"] >= 10, shapes
    patched = {p.name: patches(load(p)) for p in FILES if workflow_type(load(p)) == "SupportCase"}
    assert all(
        "effect-lanes" not in found
        for name, found in patched.items()
        if ".before-effect-lanes" in name
    )
    assert any("effect-lanes" in found for name, found in patched.items() if ".before-" not in name)
    # The guide's edition 2 and the integrity rules came with one change: the shape before it
    # has neither marker; today's cases record both.
    assert shapes["guide-edition-2"] >= 10, shapes
    older = {"guide-edition-2", "effect-lanes"}
    for patch in ("guide-edition-2", "integrity"):
        assert all(patch not in patched.get(p.name, ()) for p in FILES if shape_of(p) in older)
        assert any(patch in found for name, found in patched.items() if ".before-" not in name)
    # Lanes that mark going idle in the memo: the shape before it (lanes woken by events) stays.
    assert shapes["effect-marks"] >= 10, shapes
    assert all("effect-marks" not in found for name, found in patched.items() if ".before-" in name)
    assert any("effect-marks" in found for name, found in patched.items() if ".before-" not in name)


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


def case_histories() -> list[Path]:
    """The three longest case histories: a timeline, a tier loop, a release, as captured."""
    cases = [p for p in FILES if workflow_type(load(p)) == "SupportCase"]
    return sorted(cases, key=lambda p: -len(load(p).events))


@pytest.mark.parametrize("path", case_histories()[:3], ids=lambda p: p.stem)
async def test_a_non_deterministic_change_fails_the_replay(path: Path) -> None:
    with pytest.raises(workflow.NondeterminismError):
        await replayer(SupportCaseWithAnExtraTimer, Release).replay_workflow(load(path))


@pytest.mark.parametrize("path", case_histories()[:3], ids=lambda p: p.stem)
async def test_the_same_change_behind_a_patch_replays(path: Path) -> None:
    await replayer(SupportCasePatched, Release).replay_workflow(load(path))
