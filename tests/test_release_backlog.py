"""A release with 100,000 registrations keeps running within the carried-state bound and tells
every registered case once. Registrations over ``PENDING_BYTES`` go to the case store in chunks
and are read back when it is their turn; each run carries only the rest.

99,000 registrations arrive through a test-side bulk path (chunks written to the store, the
release started as a run continued with them), 1,000 as real ``register_case`` signals; the
fan-out's signal to each case is counted in place of sending it (the delivery itself is what
the other release tests check, on real cases)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from activities import CaseStore, upgrade
from activities.releases import ReleaseActivities
from tests.releases import register, release_handle, wait_release
from tests.reliability.harness import failed_workflow_tasks
from tests.seed import start_continued
from worker import build_worker
from workflows import bounds
from workflows import release as release_module
from workflows.contract import RELEASE_WORKFLOW, release_workflow_id
from workflows.release import CarriedRelease, ReleaseState

TOTAL = 100_000
LIVE = 1_000
BULK_CHUNK = 1_000


# Unsandboxed, so the test's smaller budgets reach the workflow code (no part of any input).
@pytest.mark.parametrize("worker_settings", [False], indirect=True)
@pytest.mark.timeout(600)
async def test_100000_registrations_stay_within_the_bound_and_each_case_is_told_once(
    env: Any, worker_settings: Any, unique: Any, monkeypatch: Any
) -> None:
    # Smaller than in production, so that live registrations spill and runs continue as new.
    monkeypatch.setattr(release_module, "PENDING_BYTES", 16 * 1024)
    monkeypatch.setattr(release_module, "RELEASE_HISTORY_BOUND", 1_000)
    told: Counter[str] = Counter()

    async def count(self: Any, case_number: str, event: Any) -> bool:
        told[case_number] += 1
        return True

    monkeypatch.setattr(ReleaseActivities, "_tell", count)
    release = unique("2032.01")
    prefix = unique("B")
    numbers = [f"{prefix}-{i:06d}" for i in range(TOTAL)]
    bulk, live = numbers[: TOTAL - LIVE], numbers[TOTAL - LIVE :]
    await upgrade(worker_settings.database_url)
    store = CaseStore(worker_settings.database_url)
    try:
        chunks = range(0, len(bulk), BULK_CHUNK)
        for index, start in enumerate(chunks):
            await store.backlog_add(release, index, bulk[start : start + BULK_CHUNK])
        seed = ReleaseState(
            release_id=release,
            registered=len(bulk),
            backlog_chunks=len(chunks),
            backlog_cases=len(bulk),
        )
        async with build_worker(env.client, worker_settings, store):
            workflow_id = release_workflow_id(release)
            await start_continued(
                env.client,
                RELEASE_WORKFLOW,
                worker_settings.task_queue,
                [(workflow_id, CarriedRelease(carried=seed))],
            )
            started = time.monotonic()
            await register(env.client, worker_settings.task_queue, release, live)
            status = await wait_release(env.client, release, lambda s: s.cases_registered == TOTAL)
            assert status.cases_to_notify == TOTAL
            registered_in = time.monotonic() - started
            await release_handle(env.client, release).signal("ship_now")
            done = await wait_release(
                env.client, release, lambda s: s.cases_to_notify == 0, timeout=240
            )
            told_in = time.monotonic() - started - registered_in
    finally:
        await store.dispose()
    assert done.cases_notified == TOTAL
    assert told == Counter(dict.fromkeys(numbers, 1)), "every registered case told once"

    sizes = []
    async for execution in env.client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        run = env.client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        async for event in run.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                attrs = event.workflow_execution_started_event_attributes
                sizes.append(attrs.input.ByteSize())
    assert await failed_workflow_tasks(env.client, workflow_id) == []
    assert len(sizes) > 3, "the release continued as new along the way"
    assert max(sizes) <= bounds.MAX_CARRIED_BYTES, sizes
    print(
        f"{TOTAL:,} registrations: {len(sizes)} runs, largest input {max(sizes) / 1024:.0f} "
        f"KiB; {LIVE:,} signals in {registered_in:.0f} s, all told in {told_in:.0f} s"
    )
