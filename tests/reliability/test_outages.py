"""The mail server and the database go away for a while. Notifications and writes retry with
back-off (no hot loop), nothing is lost, and after recovery every email arrives once and every
history row exists once."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import PendingActivityState

from activities import upgrade
from activities.store import CaseStore
from tests.reliability.harness import (
    RECOVERY_WITHIN,
    Plan,
    Tally,
    WorkerProcess,
    arrived,
    case_worker_environment,
    check_deadline_instants,
    check_outcome,
    describe_all,
    describe_plans,
    expect,
    message_ids,
    mixed_plans,
    open_and_drive,
    wait_until,
)
from tests.reliability.tcp_proxy import TcpProxy
from workflows.contract import ActivityName, DeadlinePolicy

POLICY = DeadlinePolicy(pcr_reminder="3s", pcr_closing="6s", closing_closed="5s")
# Seconds down: past the first retry of every activity, short of the third of notify's
# (5 s, 10 s, 20 s apart), so recovery is quick.
SMTP_OUTAGE = 8.0
DB_OUTAGE = 6.0


async def count_rows(store: CaseStore, plans: list[Plan]) -> int:
    rows = 0
    for plan in plans:
        rows += len(await store.history(plan.number))
    return rows


async def retrying(client: Any, plans: list[Plan], activity: str) -> list[tuple[int, float]]:
    """(attempt, seconds from the last failure to the next attempt) of every ``activity`` being
    retried: waiting out its back-off (the next attempt's instant is set), or running its next
    attempt (it started then). One whose back-off is over but that waits for a busy worker's
    slot has neither instant, and no back-off left to measure."""
    out = []
    for plan in plans:
        raw = (await client.get_workflow_handle(plan.workflow_id).describe()).raw_description
        for pending in raw.pending_activities:
            if pending.activity_type.name != activity or pending.attempt < 2:
                continue
            if pending.HasField("next_attempt_schedule_time"):
                following = pending.next_attempt_schedule_time.ToDatetime()
            elif pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                following = pending.last_started_time.ToDatetime()
            else:
                continue
            failed = pending.last_attempt_complete_time.ToDatetime()
            out.append((pending.attempt, (following - failed).total_seconds()))
    return out


async def recover(
    client: Any,
    inbox: Any,
    store: CaseStore,
    plans: list[Plan],
    tally: Tally,
    timeout: float = RECOVERY_WITHIN,
    *,
    sends_cut: bool = False,
) -> float:
    """Until every email arrived and every case is where it should be; then the outcome, where
    ``sends_cut`` allows sends in doubt (each on record)."""
    expected = {p.workflow_id: expect(p) for p in plans}
    wanted = {m for e in expected.values() for m in e.message_ids}
    ids = [p.workflow_id for p in plans]
    started = time.monotonic()

    async def done() -> bool:
        if not await arrived(store, plans, wanted, set(message_ids(inbox.messages))):
            return False
        described = await describe_all(client, ids)
        if any(d.case_status != str(expected[d.workflow_id].status) for d in described):
            return False
        rows = await count_rows(store, plans)
        return rows == sum(len(e.history_seqs) for e in expected.values())

    async def progress() -> str:
        missing = len(wanted - set(message_ids(inbox.messages)))
        described = await describe_all(client, ids)
        problems = [p for d in described for p in d.activity_problems]
        rows = await count_rows(store, plans)
        return f"{missing} emails missing; {rows} rows; activities: {problems[:3]}"

    await wait_until(done, timeout, progress)
    took = time.monotonic() - started
    await asyncio.sleep(1.0)  # a late duplicate would arrive now
    await check_outcome(
        client, store, plans, expected, message_ids(inbox.messages), tally, killed=sends_cut
    )
    await check_deadline_instants(store, plans)
    return took


async def outage(
    down: Callable[[], Awaitable[None]],
    up: Callable[[], Awaitable[None]],
    client: Any,
    plans: list[Plan],
    activity: str,
    seconds: float,
) -> list[tuple[int, float]]:
    """Take the service down for ``seconds``; the retries seen just before it comes back."""
    await down()
    await asyncio.sleep(seconds)
    retries = await retrying(client, plans, activity)
    await up()
    return retries


def check_back_off(retries: list[tuple[int, float]], initial: float, seconds: float) -> str:
    """Every retry waits at least initial x 2^(attempt-2): back-off, not a hot loop."""
    assert retries, "the outage should leave activities waiting to be retried"
    for attempt, wait in retries:
        assert wait >= initial * 2 ** (attempt - 2) * 0.9, (attempt, wait)
    # Attempt n starts initial x (2^(n-1) - 1) after the first; one more for timing slack.
    bound = math.floor(math.log2(seconds / initial + 1)) + 2
    top = max(a for a, _ in retries)
    assert top <= bound, f"{top} attempts within {seconds} s: not backing off"
    return f"{len(retries)} {'retries' if len(retries) > 1 else 'retry'} pending, attempts <= {top}"


async def test_smtp_outage_retries_with_back_off_and_sends_each_message_once(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    task_queue = unique("smtp")
    worker = spawn_worker(case_worker_environment(env, task_queue, url, inbox))
    plans = mixed_plans(unique("S"), 30, POLICY)
    await worker.ready()
    store = CaseStore(url)
    try:
        inbox.stop()  # the mail server is down before the first email
        await open_and_drive(env.client, task_queue, plans)

        async def restart() -> None:
            inbox.start()

        async def nothing() -> None:
            pass

        retries = await outage(
            nothing, restart, env.client, plans, ActivityName.NOTIFY_BATCH, SMTP_OUTAGE
        )
        assert not inbox.messages
        pending = await store.outbox(pending_only=True)
        assert pending and all(e.last_error and e.sent_at is None for e in pending)
        back_off = check_back_off(retries, 5.0, SMTP_OUTAGE)
        took = await recover(env.client, inbox, store, plans, tally)
        sent = await store.outbox()
        assert all(e.sent_at is not None for e in sent)
    finally:
        await store.dispose()
    tally.notes = (
        f"{describe_plans(plans)}; down {SMTP_OUTAGE:.0f} s; {back_off}; {len(pending)} emails "
        f"waited in the outbox; all delivered {took:.0f} s after recovery"
    )


async def test_database_outage_persist_retries_and_every_row_exists_once(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    direct = await postgres_databases.create()
    await upgrade(direct)
    target = make_url(direct)
    proxy = await TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = target.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    task_queue = unique("db")
    worker = spawn_worker(case_worker_environment(env, task_queue, proxied, inbox))
    plans = mixed_plans(unique("D"), 30, POLICY)
    store = CaseStore(direct)  # the test reads around the proxy
    try:
        await worker.ready()
        await open_and_drive(env.client, task_queue, plans)
        # Cut in the middle of the work: some rows and emails are done, most are not.
        total = sum(len(expect(p).history_seqs) for p in plans)

        async def some_rows() -> bool:
            rows = await count_rows(store, plans)
            return rows >= total // 4

        async def rows_so_far() -> str:
            return f"rows: {await count_rows(store, plans)}/{total}"

        await wait_until(some_rows, 60, rows_so_far)

        async def cut() -> None:
            proxy.cut()

        cut_at = datetime.now(UTC)
        retries = await outage(
            cut, proxy.restore, env.client, plans, ActivityName.PERSIST_BATCH, DB_OUTAGE
        )
        back_off = check_back_off(retries, 1.0, DB_OUTAGE)
        # A cut can lose the answer to the commit recording that a send begins: the row says
        # "handed", the attempt failed before sending, and the next one can only resend in doubt.
        took = await recover(env.client, inbox, store, plans, tally, sends_cut=True)
    finally:
        await store.dispose()
        await proxy.stop()
    tally.notes = (
        f"{describe_plans(plans)}; PostgreSQL cut at {cut_at:%H:%M:%S} for {DB_OUTAGE:.0f} s "
        f"(connections reset, new ones refused); {back_off}; recovered {took:.0f} s after"
    )
