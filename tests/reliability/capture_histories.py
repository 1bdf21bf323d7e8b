"""Regenerate ``tests/histories/``: the event histories of real runs of every workflow scenario.

    .venv/bin/python tests/reliability/capture_histories.py

runs the lifecycle suite (``tests/test_case_*.py``) with this file as a pytest plugin: after each
test it fetches the history of every workflow run on that test's task queue (cases, and the
releases they registered with) and writes one JSON file per run, ``history.to_json()``, named
after the test. ``tests/reliability/test_replay.py`` replays them all with the SDK's
``Replayer``, so a change to the workflow code that would break a running case fails CI.

Regenerate after a deliberate, patched change to the workflow (see the README, "Changing the
workflow safely"); keep the old files too when running cases may still have the old shape (give
them another name), since those are exactly the histories the new code must still replay.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HISTORIES = Path(os.environ.get("CAPTURE_HISTORIES_DIR", REPO / "tests" / "histories"))
SCENARIOS = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_case_*.py"))
# A history bigger than this is left out: the first run of the continue-as-new test, a flood of
# 1,500 identical refused signals (its second run, which starts from carried state, is kept).
MAX_BYTES = int(os.environ.get("CAPTURE_MAX_BYTES", 320_000))
SKIPPED: list[str] = []


def file_stem(nodeid: str) -> str:
    """``tests/test_case_tiers.py::test_loop[x]`` -> ``case_tiers.test_loop-x``."""
    module, _, name = nodeid.partition("::")
    module = Path(module).stem.removeprefix("test_")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{module}.{name.removeprefix('test_')}").strip("-")


@pytest.fixture(autouse=True)
async def _capture_histories(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    env: Any = request.node.funcargs.get("env")
    settings: Any = request.node.funcargs.get("worker_settings")
    if env is None or settings is None:
        return
    client = env.client
    query = f'TaskQueue = "{settings.task_queue}"'
    runs = {e.run_id: e async for e in client.list_workflows(query)}
    # Visibility lags: the run a case continued into a moment ago may not be listed yet.
    for workflow_id in {e.id for e in runs.values()}:
        latest = await client.get_workflow_handle(workflow_id).describe()
        runs.setdefault(latest.run_id, latest)
    ordered = sorted(runs.values(), key=lambda e: (e.start_time, e.id, e.run_id))
    stem = file_stem(request.node.nodeid)
    kept = 0
    for execution in ordered:
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        text = json.dumps(json.loads(history.to_json()), separators=(",", ":"))
        if len(text) > MAX_BYTES:
            SKIPPED.append(f"{stem}: {execution.id} run {execution.run_id} ({len(text)} bytes)")
            continue
        kept += 1
        kind = "release" if execution.workflow_type != "SupportCase" else "case"
        path = HISTORIES / f"{stem}.{kind}-{kept}.json"
        path.write_text(text + "\n")


def pytest_sessionfinish() -> None:
    for line in SKIPPED:
        print(f"left out, too big: {line}", file=sys.__stdout__)


def current(folder: Path) -> list[Path]:
    """The captures of today's code; ``*.before-<patch>.json`` are an older shape, kept."""
    return sorted(p for p in folder.glob("*.json") if ".before-" not in p.name)


def main() -> int:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    for old in current(HISTORIES):
        old.unlink()
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "tests.reliability.capture_histories",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "180",
        *SCENARIOS,
    ]
    code = subprocess.call(command, cwd=REPO)
    files = current(HISTORIES)
    total = sum(f.stat().st_size for f in files)
    print(f"{len(files)} histories, {total // 1024} KiB, in {HISTORIES}")
    return code


if __name__ == "__main__":
    sys.exit(main())
