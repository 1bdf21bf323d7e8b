"""The support-cases worker: ``SupportCase``, ``Release`` and their activities on one task queue.

``python worker.py`` connects where Temporal's environment configuration points.
"""

from __future__ import annotations

import asyncio

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import logs
from activities import CaseActivities, CaseStore, upgrade
from activities.releases import ReleaseActivities
from settings import Settings, get_settings
from starter.connection import connect
from workflows.case import SupportCase
from workflows.release import Release

log = structlog.get_logger()

# Pure, deterministic modules the sandbox may share instead of re-importing per workflow run:
# re-importing pydantic and the lifecycle for every case is most of the sandbox's cost.
PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_inspection",
    "workflows.calendar",
    "workflows.contract",
    "workflows.lifecycle",
    "workflows.payloads",
    "workflows.search",
    "activities.options",
)


def build_worker(
    client: Client,
    settings: Settings,
    store: CaseStore,
    **options: object,
) -> Worker:
    case_activities = CaseActivities(store, settings)
    release_activities = ReleaseActivities(client)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[SupportCase, Release],
        activities=[
            *case_activities.activities(),
            release_activities.register_with_release,
            release_activities.fan_out_release,
        ],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
        **options,  # type: ignore[arg-type]
    )


async def run_worker(client: Client, settings: Settings) -> None:
    await upgrade(settings.database_url)  # a fresh database just works
    store = CaseStore(settings.database_url)
    try:
        worker = build_worker(client, settings, store)
        log.info("worker polling", task_queue=settings.task_queue)
        await worker.run()
    finally:
        await store.dispose()


async def main() -> None:
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)
    client = await connect()
    await run_worker(client, settings)


if __name__ == "__main__":
    asyncio.run(main())
