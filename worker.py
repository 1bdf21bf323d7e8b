"""The support-cases worker: ``SupportCase``, ``Release`` and their activities on one task queue.

``python worker.py`` with a Temporal address configured (Temporal's environment configuration:
``TEMPORAL_ADDRESS``, a ``TEMPORAL_PROFILE``, TLS, API key) connects there and registers any
missing search attribute. With none, it starts the embedded dev server (``runtime.devserver``:
the installed ``temporal`` CLI, persisted under ``.data/``, Web UI on http://localhost:8233) and
runs against it. Ctrl-C or SIGTERM drains the worker, then stops the server; a second Ctrl-C
stops at once. Start-up problems are one line on stderr and exit code 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from datetime import timedelta
from typing import Any, cast

STARTED = time.monotonic()
if __name__ == "__main__":
    # A cold start is mostly the imports below: spawn the embedded server first, so that it
    # boots meanwhile (``main`` adopts it; any problem is met again there and said in one line).
    from runtime.devserver import spawn_early

    EARLY_SERVER = spawn_early()

import structlog
from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from temporalio.worker import Interceptor, Worker

import logs
from activities import CaseActivities, CaseStore, MailRelay, Registrar, upgrade
from activities.db import ACTIVITY_SLOTS, async_url, is_sqlite
from activities.logcontext import ActivityLogContext
from activities.mailer import Mailer, SmtpTlsRequired
from activities.releases import ReleaseActivities
from runtime.connection import (
    SearchAttributeProblem,
    TemporalUnavailable,
    address_configured,
    connect,
    connect_config,
    ensure_search_attributes,
    load_profile,
    redacted,
)
from runtime.devserver import DevServer, DevServerConfig, DevServerError
from runtime.encryption import EncryptionCodec, EncryptionConfigError
from runtime.sandbox import workflow_runner
from runtime.signing import Signer
from runtime.telemetry import install_metrics
from settings import Settings, get_settings
from workflows import trust
from workflows.case import SupportCase
from workflows.release import Release
from workflows.train import ReleaseTrain

log = structlog.get_logger()

# Activities (and local activities: the cases' records) in flight on a SQLite case store.
SQLITE_ACTIVITY_SLOTS = 4

# How long a draining worker lets running activities finish before cancelling them.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)


def build_worker(
    client: Client,
    settings: Settings,
    store: CaseStore,
    **options: object,
) -> Worker:
    install_trusted_senders(settings)
    signer = Signer.from_file(settings.signing_key) if settings.signing_key else None
    sign = signer.sign if signer else None
    # The worker sends the outbox's mail itself, for as long as it runs (activities.relay).
    relay = MailRelay(store, settings, client, sign, **options.pop("relay_options", {}))  # type: ignore[arg-type]
    case_activities = CaseActivities(store, Registrar(client, sign), settings, relay.wake)
    # Signals in flight during a release fan-out (``activities.releases.CONCURRENCY``).
    fan_out = options.pop("fan_out_concurrency", None)
    # The fan-out's checkpoint reaches the server within a second (the SDK's default is 80% of
    # the heartbeat timeout), so a crashed fan-out re-sends at most a second's worth of signals.
    options.setdefault("max_heartbeat_throttle_interval", timedelta(seconds=1))
    # One case-store connection per activity slot (activities.db): no activity waits for the pool.
    # SQLite takes one writer at a time: more writers in flight only queue on its lock, which a
    # busy worker then holds across event-loop turns until "database is locked" (bench/README.md).
    slots = SQLITE_ACTIVITY_SLOTS if is_sqlite(async_url(settings.database_url)) else ACTIVITY_SLOTS
    options.setdefault("max_concurrent_activities", slots)
    options.setdefault("max_concurrent_local_activities", slots)
    options.setdefault("max_cached_workflows", settings.workflow_cache)
    release_activities = ReleaseActivities(
        client, concurrency=int(fan_out) if isinstance(fan_out, int) else None, sign=sign
    )
    # Every log line of an activity carries its case number and workflow id.
    extra = cast("Sequence[Interceptor]", options.pop("interceptors", ()))
    # Another edition of the workflow code (the replay tests' deploys of a change).
    workflows = cast(
        "Sequence[type]", options.pop("workflows", (SupportCase, Release, ReleaseTrain))
    )
    interceptors: list[Interceptor] = [ActivityLogContext(), *extra]
    return Worker(
        client,
        task_queue=settings.task_queue,
        interceptors=interceptors,
        workflows=list(workflows),
        activities=[*case_activities.activities(), *release_activities.activities()],
        workflow_runner=workflow_runner(settings.workflow_sandbox),
        plugins=[SimplePlugin("support-cases.mail-relay", run_context=relay.running)],
        **options,  # type: ignore[arg-type]
    )


def install_trusted_senders(settings: Settings) -> trust.TrustedSenders | None:
    """Hand the trusted senders file to this task queue's workflows, read once at start.

    Replay-safe: a workflow checks a proof against the registry at its own ``workflow.now()``,
    and the file only grows (keys get an end, never a deletion or an earlier start; roles are
    only added), so a later file accepts every event an earlier one accepted at that instant."""
    senders = trust.load(settings.trusted_senders) if settings.trusted_senders else None
    trust.install(settings.task_queue, senders)
    return senders


async def run_worker(
    client: Client,
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    schema_ready: bool = False,
    **options: object,
) -> None:
    """Run the worker until ``stop`` is set (then drain it), or until cancelled; ``options`` go
    to ``build_worker``."""
    if settings.smtp_url:  # credentials only over TLS: refuse to start rather than leak them
        await Mailer(settings.smtp_url, settings.mail_from).check_tls_for_credentials()
    if not schema_ready:
        await upgrade(settings.database_url)  # a fresh database just works
    store = CaseStore(settings.database_url)
    try:
        options.setdefault("graceful_shutdown_timeout", GRACEFUL_SHUTDOWN)
        worker = build_worker(client, settings, store, **options)
        running = asyncio.create_task(worker.run())
        codec = client.data_converter.payload_codec
        log.info(
            "worker polling",
            task_queue=settings.task_queue,
            namespace=client.namespace,
            # The key new payloads are encrypted with (runtime.encryption), or "off".
            encryption=codec.keys.current if isinstance(codec, EncryptionCodec) else "off",
        )
        try:
            if stop is None:
                await running
                return
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not running.done():
                log.info("draining the worker")
                await worker.shutdown()
            await running
            log.info("worker stopped")
        finally:
            if not running.done():
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
    finally:
        await store.dispose()


async def main(early: DevServer | None = None) -> int:
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)
    # Before any client exists: every client of this process reports to the endpoint.
    if install_metrics(settings.metrics_port) is not None:
        log.info("metrics", prometheus=f"http://0.0.0.0:{settings.metrics_port}/metrics")
    try:
        if install_trusted_senders(settings) and not settings.signing_key:
            # Its release signals (register, a train's reschedule, release shipped) go unsigned.
            log.warning("trusted senders without CASES_SIGNING_KEY: releases will be refused")
        if settings.signing_key:
            Signer.from_file(settings.signing_key)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        if early is not None:
            await _stop_server(early)
        return 1
    stop = asyncio.Event()
    _on_stop_signals(stop, asyncio.current_task())
    try:
        async with AsyncExitStack() as cleanup:
            if address_configured():
                # What it connects to, never a secret (the API key masked, TLS files as flags).
                log.info("connecting to temporal", **redacted(connect_config()))
                client = await connect()
                added = await ensure_search_attributes(client)
                if added:
                    log.info("search attributes registered", added=added)
                await run_worker(client, settings, stop)
                return 0
            if early is not None:
                server = early
            else:
                namespace = load_profile().namespace or "default"
                server = DevServer(DevServerConfig.from_settings(settings, namespace))
                server.spawn()
            config = server.config
            cleanup.push_async_callback(_stop_server, server)
            # The schema upgrade runs while the server boots: half the cold start.
            waiting = asyncio.gather(server.wait_ready(), upgrade(settings.database_url))
            stopping = asyncio.create_task(stop.wait())
            racing: set[asyncio.Future[Any]] = {waiting, stopping}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not waiting.done():  # Ctrl-C while starting
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                return 0
            client = waiting.result()[0]
            log.info(
                "temporal dev server ready",
                ui=config.ui_url,
                grpc=f"localhost:{config.port}",
                http_api=config.http_url,
                data=str(config.db_file),
                ready_s=round(server.ready_after or 0, 2),
                since_start_s=round(time.monotonic() - STARTED, 2),
            )
            await run_worker(client, settings, stop, schema_ready=True)
            return 0
    except (
        TemporalUnavailable,
        DevServerError,
        SearchAttributeProblem,
        EncryptionConfigError,
        SmtpTlsRequired,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


async def _stop_server(server: DevServer) -> None:
    code = await server.stop()
    log.info("temporal dev server stopped", exit_code=code)


def _on_stop_signals(stop: asyncio.Event, task: asyncio.Task[object] | None) -> None:
    """The first Ctrl-C / SIGTERM drains; the second cancels (the server is still stopped)."""
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal: stopping now", signal=sig.name)
            if task is not None:
                task.cancel()
            return
        log.info("stopping", signal=sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with suppress(NotImplementedError, ValueError):  # not on this platform
            loop.add_signal_handler(sig, handle, sig)


def run() -> None:
    try:
        code = asyncio.run(main(globals().get("EARLY_SERVER")))
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: the SDK's Rust runtime can crash a process that exits
    # normally (temporalio/sdk-python#300), which would turn a clean stop into exit 134/139.
    os._exit(code)


if __name__ == "__main__":
    run()
