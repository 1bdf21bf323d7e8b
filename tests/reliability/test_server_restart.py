"""The Temporal server restarts, on the `make run` path: ``python worker.py`` with no Temporal
address runs the embedded dev server on its SQLite file. Stopped (SIGTERM: the worker drains,
then stops the server) while cases wait on timers, and started again on the same file, every
case resumes in its run, its deadlines keep their instants (those that fell due while the server
was down act at their own instant), and every email arrives once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.store import CaseStore
from tests.conftest import free_port
from tests.reliability.harness import (
    RECOVERY_WITHIN,
    Plan,
    Tally,
    WorkerProcess,
    arrived,
    check_deadline_instants,
    check_outcome,
    describe_all,
    describe_plans,
    expect,
    message_ids,
    mixed_plans,
    open_and_drive,
    wait_until,
    worker_environment,
)
from workflows.contract import Deadline, DeadlinePolicy, Snapshot

POLICY = DeadlinePolicy(pcr_reminder="8s", pcr_closing="14s", closing_closed="8s")
# Where each path waits once its events are in: on a timer, or for people, or closed.
WAITING = {"Pending Customer Response", "Closing", "Waiting for Process", "Closed"}


async def snapshots(client: Client, plans: list[Plan]) -> dict[str, Snapshot]:
    out = {}
    for plan in plans:
        handle = client.get_workflow_handle(plan.workflow_id)
        out[plan.workflow_id] = await handle.query("snapshot", result_type=Snapshot)
    return out


async def run_ids(client: Client, ids: list[str]) -> dict[str, str | None]:
    return {i: (await client.get_workflow_handle(i).describe()).run_id for i in ids}


def ahead(timeline: list[Deadline], later: list[Deadline]) -> bool:
    """``later`` is what is left of ``timeline``: the same instants, minus those passed."""
    return later == timeline[len(timeline) - len(later) :]


async def test_server_restart_on_the_embedded_sqlite_store(
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    port = free_port()
    task_queue = unique("restart")
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    settings = worker_environment(
        CASES_DATA_DIR=str(tmp_path / "data"),
        CASES_DEV_SERVER_PORT=str(port),
        CASES_UI_PORT=str(free_port()),
        CASES_HTTP_PORT=str(free_port()),
        CASES_TASK_QUEUE=task_queue,
        CASES_DATABASE_URL=url,
        CASES_SMTP_URL=inbox.url,
        CASES_POLICY_SHORTEST="1s",
    )
    plans = mixed_plans(unique("R"), 15, POLICY)
    ids = [p.workflow_id for p in plans]

    first = await spawn_worker(settings, "first").ready()
    client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
    await open_and_drive(client, task_queue, plans)
    expected = {p.workflow_id: expect(p) for p in plans}

    async def all_waiting() -> bool:
        described = await describe_all(client, ids)
        return all(d.case_status in WAITING for d in described)

    await wait_until(all_waiting, 60, lambda: asyncio.sleep(0, first.tail()))
    before = await snapshots(client, plans)
    runs = await run_ids(client, ids)
    on_timers = sum(1 for s in before.values() if s.next_deadline is not None)
    assert on_timers > 0

    stopped_at = time.monotonic()
    assert await first.stop() == 0, first.tail()  # SIGTERM: drains, then stops the server
    assert "temporal dev server stopped" in first.output()
    await asyncio.sleep(2)  # down: some deadlines fall due now
    second = await spawn_worker(settings, "second").ready()
    down_for = time.monotonic() - stopped_at
    assert (tmp_path / "data" / "temporal.db").exists()

    client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
    after = await snapshots(client, plans)
    for workflow_id, old in before.items():
        assert ahead(old.timeline, after[workflow_id].timeline), (old, after[workflow_id])
    assert await run_ids(client, ids) == runs  # the same runs resumed, none started anew

    wanted = {m for e in expected.values() for m in e.message_ids}
    store = CaseStore(url)

    async def finished() -> bool:
        if not await arrived(store, plans, wanted, set(message_ids(inbox.messages))):
            return False
        described = await describe_all(client, ids)
        return all(d.case_status == str(expected[d.workflow_id].status) for d in described)

    async def progress() -> str:
        return f"{len(wanted - set(message_ids(inbox.messages)))} emails missing\n{second.tail()}"

    try:
        await wait_until(finished, RECOVERY_WITHIN, progress)
        await asyncio.sleep(1.0)
        await check_outcome(client, store, plans, expected, message_ids(inbox.messages), tally)
        timers = await check_deadline_instants(store, plans)
    finally:
        await store.dispose()
    assert await second.stop() == 0
    tally.notes = (
        f"{describe_plans(plans)}; {on_timers} on timers at the stop; server down "
        f"{down_for:.0f} s; {timers} timer transitions at their instants"
    )
