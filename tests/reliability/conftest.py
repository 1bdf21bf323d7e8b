"""Fixtures of the reliability suite: worker processes that are always killed, and the closing
table of every scenario's counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import Tally, WorkerProcess

TALLIES: list[Tally] = []
_DURATIONS: dict[str, float] = {}


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn_worker(env, name=...)`` starts ``python worker.py``; every one started is killed
    (its whole process group) when the test ends, whatever happened."""
    started: list[WorkerProcess] = []

    def spawn(
        env: dict[str, str], name: str = "worker", command: tuple[str, ...] = ("worker.py",)
    ) -> WorkerProcess:
        worker = WorkerProcess(name, env, tmp_path / f"{name}.log", command).start()
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.kill()


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """This scenario's row of the closing table."""
    row = Tally(scenario=request.node.name.removeprefix("test_"))
    started = time.monotonic()
    yield row
    row.seconds = time.monotonic() - started
    TALLIES.append(row)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" in report.nodeid.replace("\\", "/"):
        _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    write = terminalreporter.write_line
    write("")
    write("reliability scenarios")
    header = (
        f"{'scenario':<44} {'cases':>5} {'mail exp':>8} {'mail got':>8} {'dup':>4} {'doubt':>5} "
        f"{'miss':>4} {'stuck':>5} {'rows exp':>8} {'rows':>6} {'s':>6}  notes"
    )
    write(header)
    write("-" * len(header))
    for t in TALLIES:
        write(
            f"{t.scenario[:44]:<44} {t.cases:>5} {t.messages_expected:>8} "
            f"{t.messages_received:>8} {t.duplicates:>4} {t.in_doubt:>5} {t.missing:>4} "
            f"{t.stuck:>5} "
            f"{t.history_rows_expected:>8} {t.history_rows:>6} {t.seconds:>6.1f}  {t.notes}"
        )
    write(f"reliability suite run time: {sum(_DURATIONS.values()):.1f} s")
