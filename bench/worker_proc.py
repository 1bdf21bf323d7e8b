"""One benchmark worker process: ``python -m bench.worker_proc --kind engine|engine-noop|bare``.

- ``engine``: the project's own worker, ``worker.build_worker`` as ``python worker.py`` runs it,
  with the real activities: each case's ``record`` into SQLite (a file in the bench's temp dir:
  rows and outbox messages; no SMTP URL, so the relay sends nothing), registrations with the
  ``Release`` workflow. Logging is set up as
  ``worker.py`` does (console lines at INFO), written to the worker's log file.
- ``engine-noop``: the same ``build_worker`` (same workflows, sandbox passthrough and tuning), but
  every activity is a no-op that only decodes its input: the engine's own overhead, with
  activities that cost what the bare ones cost.
- ``bare``: ``bench.bare`` on a plain ``Worker`` with the SDK's defaults.

``--options`` (JSON) are extra ``Worker`` keyword arguments, the same for every kind;
``BENCH_PASS_CASE=1`` shares the case workflow's modules across sandboxed runs (a candidate).
The process writes ``--ready-file`` once it polls, and drains on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.bare import BareCase, BareDeadline, BarePlaced, BareUpdate, bare_effect
from workflows.contract import (
    ActivityName,
    BacklogChunk,
    FanOut,
    FanOutResult,
    PolicySettings,
    Record,
    RecordResult,
    ReleaseInput,
)

# The case workflow's modules, which the sandbox re-imports for every run it creates.
CASE_MODULES = ("workflows.case", "workflows.metrics")


def share_case_modules() -> None:
    """A candidate the benches measure, not the default: the case workflow's own modules shared
    by every sandboxed run of the next ``build_worker`` instead of re-imported into each."""
    import runtime.sandbox

    shared = (*runtime.sandbox.PASSTHROUGH, *CASE_MODULES)
    runtime.sandbox.PASSTHROUGH = shared  # type: ignore[assignment]


class NoopCaseActivities:
    """Stands in for ``activities.CaseActivities``: same names and inputs, no I/O. The policy
    settings are the worker's own (``CASES_POLICY_SHORTEST`` and ``CASES_DEFAULT_POLICY``), so a
    case opens with the policy it would open with on the real worker."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        from settings import Settings, get_settings, policy_settings

        given = [a for a in args if isinstance(a, Settings)]
        self._policy = policy_settings(given[0] if given else get_settings())

    @activity.defn(name=ActivityName.RECORD)
    async def record(self, request: Record) -> RecordResult:
        return RecordResult(owner=request.claim)  # granted: no store holds another run's claim

    @activity.defn(name=ActivityName.POLICY_SETTINGS)
    async def policy_settings(self) -> PolicySettings:
        return self._policy

    @activity.defn(name=ActivityName.RELEASE_BACKLOG_ADD)
    async def release_backlog_add(self, chunk: BacklogChunk) -> None:
        return None

    @activity.defn(name=ActivityName.RELEASE_BACKLOG_LOAD)
    async def release_backlog_load(self, chunk: BacklogChunk) -> BacklogChunk:
        return chunk

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.record,
            self.policy_settings,
            self.release_backlog_add,
            self.release_backlog_load,
        ]


class NoopReleaseActivities:
    """Stands in for ``activities.releases.ReleaseActivities``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    @activity.defn(name=ActivityName.OPEN_RELEASE)
    async def open_release(self, release: ReleaseInput) -> None:
        return None

    @activity.defn(name=ActivityName.FAN_OUT_RELEASE)
    async def fan_out_release(self, batch: FanOut) -> FanOutResult:
        return FanOutResult(signalled=len(batch.case_numbers), skipped=0)

    def activities(self) -> list[Callable[..., Any]]:
        return [self.open_release, self.fan_out_release]


async def build(kind: str, client: Client, args: argparse.Namespace) -> tuple[Worker, Any]:
    options: dict[str, Any] = json.loads(args.options)
    if kind == "bare":
        worker = Worker(
            client,
            task_queue=args.task_queue,
            workflows=[BareCase, BareDeadline, BarePlaced, BareUpdate],
            activities=[bare_effect],
            **options,
        )
        return worker, None

    import logs
    import worker as project_worker
    from activities import CaseStore, upgrade
    from settings import Settings

    if os.environ.get("BENCH_PASS_CASE"):
        share_case_modules()
    settings = Settings(task_queue=args.task_queue, database_url=args.database_url, smtp_url=None)
    logs.configure(settings.log_format, os.environ.get("CASES_LOG_LEVEL", settings.log_level))
    if kind == "engine-noop":
        project_worker.CaseActivities = NoopCaseActivities  # type: ignore[assignment,misc]
        project_worker.ReleaseActivities = NoopReleaseActivities  # type: ignore[assignment,misc]
        return project_worker.build_worker(client, settings, None, **options), None  # type: ignore[arg-type]
    await upgrade(settings.database_url)
    store = CaseStore(settings.database_url)
    return project_worker.build_worker(client, settings, store, **options), store


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["engine", "engine-noop", "bare"], required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()

    import workflows.case

    print(f"bench worker {args.kind}: project from {Path(workflows.case.__file__).parent.parent}")
    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    worker, store = await build(args.kind, client, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(worker.run())
    await asyncio.to_thread(Path(args.ready_file).write_text, str(os.getpid()))
    await stop.wait()
    await worker.shutdown()
    await running
    if store is not None:
        await store.dispose()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # skip finalisation: the SDK's runtime can crash a process at exit
