"""The mail server and the database go away for a while. The relay's sends and the cases'
records retry with back-off (no hot loop), nothing is lost, and after recovery every email
arrives once and every history row exists once."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import make_url

from activities import upgrade
from activities.store import CaseStore
from starter.client import CaseClient
from tests.reliability.harness import (
    RECOVERY_WITHIN,
    TIER1,
    Plan,
    Tally,
    WorkerProcess,
    arrived,
    case_input,
    case_worker_environment,
    check_deadline_instants,
    check_outcome,
    describe_all,
    describe_plans,
    expect,
    message_ids,
    mixed_plans,
    open_and_drive,
    send_events,
    to,
    wait_until,
)
from tests.reliability.tcp_proxy import TcpProxy
from tests.soak.oracle import replay, run_histories
from workflows.contract import DeadlinePolicy, PolicySettings, Status

POLICY = DeadlinePolicy(pcr_reminder="3s", pcr_closing="6s", closing_closed="5s")
# Seconds down: past the first retry of every record and send, short of the third send's
# (5 s, 10 s, 20 s apart), so recovery is quick.
SMTP_OUTAGE = 8.0
DB_OUTAGE = 6.0
# A case opened with the store cut goes to Closing 3 s after it waits for the customer; the cut
# outlasts that.
OPENING_POLICY = DeadlinePolicy(pcr_reminder="1s", pcr_closing="3s", closing_closed="1h")
OPENING_OUTAGE = 20.0
SETTINGS = PolicySettings.model_validate({"shortest": "1s"})  # the workers' (the oracle reads it)


async def count_rows(store: CaseStore, plans: list[Plan]) -> int:
    rows = 0
    for plan in plans:
        rows += len(await store.history(plan.number))
    return rows


def retries(worker: WorkerProcess, event: str, by: str) -> list[tuple[int, float]]:
    """(attempt, seconds since the attempt before failed) of every retry that failed too, read
    from the worker's log lines ``event`` (``case.record_failed`` of each case's record, by
    ``workflow_id``; ``notify.failed`` of each message, by ``key``)."""
    failed: dict[str, list[tuple[int, datetime]]] = {}
    for line in worker.lines():
        if line.get("event") == event and line.get(by) and line.get("attempt"):
            at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
            failed.setdefault(str(line[by]), []).append((int(line["attempt"]), at))
    out = []
    for attempts in failed.values():
        attempts.sort()
        for (_, before), (attempt, at) in itertools.pairwise(attempts):
            out.append((attempt, (at - before).total_seconds()))
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
    down: Callable[[], Awaitable[None]], up: Callable[[], Awaitable[None]], seconds: float
) -> None:
    """Take the service down for ``seconds``, then bring it back."""
    await down()
    await asyncio.sleep(seconds)
    await up()


def check_back_off(retries: list[tuple[int, float]], initial: float, seconds: float) -> str:
    """Every retry waits at least initial x 2^(attempt-2): back-off, not a hot loop."""
    assert retries, "the outage should make attempts fail and be retried"
    for attempt, wait in retries:
        assert wait >= initial * 2 ** (attempt - 2) * 0.9, (attempt, wait)
    # Attempt n starts initial x (2^(n-1) - 1) after the first; one more for timing slack.
    bound = math.floor(math.log2(seconds / initial + 1)) + 2
    top = max(a for a, _ in retries)
    assert top <= bound, f"{top} attempts within {seconds} s: not backing off"
    return f"{len(retries)} {'retries' if len(retries) > 1 else 'retry'} failed, attempts <= {top}"


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

        await outage(nothing, restart, SMTP_OUTAGE)
        assert not inbox.messages
        pending = await store.outbox(pending_only=True)
        # Each case's next message was tried (and failed); the ones behind it wait their turn.
        heads = {e.case_number: e for e in reversed(pending)}
        assert pending and all(e.last_error and e.sent_at is None for e in heads.values())
        back_off = check_back_off(retries(worker, "notify.failed", "key"), 5.0, SMTP_OUTAGE)
        took = await recover(env.client, inbox, store, plans, tally)
        sent = await store.outbox()
        assert all(e.sent_at is not None for e in sent)
    finally:
        await store.dispose()
    tally.notes = (
        f"{describe_plans(plans)}; down {SMTP_OUTAGE:.0f} s; {back_off}; {len(pending)} emails "
        f"waited in the outbox; all delivered {took:.0f} s after recovery"
    )


async def behind_a_proxy(postgres_databases: Any) -> tuple[str, str, TcpProxy]:
    """A fresh, migrated PostgreSQL database: its URL, its URL through a TCP proxy the test can
    cut, and the proxy."""
    direct = await postgres_databases.create()
    await upgrade(direct)
    target = make_url(direct)
    proxy = await TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = target.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    return direct, proxied, proxy


async def test_database_outage_persist_retries_and_every_row_exists_once(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    direct, proxied, proxy = await behind_a_proxy(postgres_databases)
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
        await outage(cut, proxy.restore, DB_OUTAGE)
        failed = retries(worker, "case.record_failed", "workflow_id")
        back_off = check_back_off(failed, 1.0, DB_OUTAGE)
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


async def test_a_case_opened_while_the_database_is_down_acts_on_its_deadlines_on_time(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    """Its opening record (and the claim in it) waits for the database; its clock does not: it
    goes from Pending Customer Response to Closing at the guide's instant while the store is
    still cut, and everything is written and mailed once it is back."""
    direct, proxied, proxy = await behind_a_proxy(postgres_databases)
    task_queue = unique("db-open")
    worker = spawn_worker(case_worker_environment(env, task_queue, proxied, inbox))
    plan = Plan(case_input(unique("O"), policy=OPENING_POLICY))
    plan.events = [to("Tier 1 Analysis", TIER1), to("Pending Customer Response", TIER1)]
    store = CaseStore(direct)
    cases = CaseClient(env.client, task_queue)
    try:
        await worker.ready()
        proxy.cut()
        plan.run_id = (await cases.open(plan.case)).first_execution_run_id
        await send_events(env.client, plan)

        async def closing() -> bool:
            return (await cases.snapshot(plan.number)).status is Status.CLOSING

        async def status() -> str:
            return f"{(await cases.snapshot(plan.number)).status}\n{worker.tail()}"

        await wait_until(closing, OPENING_OUTAGE, status)
        assert await store.get_case(plan.number) is None, "the store is still cut"
        [entry] = [h for h in (await cases.snapshot(plan.number)).history if h.due is not None]
        assert entry.due is not None
        late = (entry.at - entry.due).total_seconds()
        assert late < 2.0, f"the deadline waited {late:.1f} s for the opening record"
        await proxy.restore()

        async def written() -> bool:
            recorded = await store.outbox(plan.number)
            return len(recorded) >= 3 and not await store.outbox(plan.number, pending_only=True)

        await wait_until(written, RECOVERY_WITHIN, status)
        assert plan.run_id is not None
        runs = await run_histories(env.client, plan.number, plan.run_id)
        wanted = set(replay(plan.number, runs, SETTINGS).message_ids)
        got = message_ids(inbox.messages)
        assert set(got) == wanted and all(n == 1 for n in got.values())
        assert [h.seq for h in await store.history(plan.number)] == [
            h.seq for h in (await cases.snapshot(plan.number)).history
        ]
    finally:
        await store.dispose()
        await proxy.stop()
    tally.cases, tally.messages_expected = 1, len(wanted)
    tally.messages_received = sum(got.values())
    tally.notes = f"opened with PostgreSQL cut; Closing {late:.2f} s after its instant, store cut"
