"""Workers die: ``kill -9`` in the middle of hundreds of cases, some mid-send and some on
timers. After a restart (or with a second worker on the queue) every case reaches the status the
pure core says it must, every email arrives exactly once, every history row is there once, no
case is stuck, and every deadline acts at its own instant even when it fell due while no worker
was up."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from activities.store import CaseStore
from tests.reliability.harness import (
    RECOVERY_WITHIN,
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
    wait_until,
)
from workflows.contract import DeadlinePolicy

# Deadlines in seconds, so the timers fire during the test, in real time, some while no worker
# is up. The reminder comes before the closing, as the policy requires.
POLICY = DeadlinePolicy(pcr_reminder="3s", pcr_closing="6s", closing_closed="5s")
WITH_TIMERS = {"Pending Customer Response", "Closing"}
BOTH_AT_THE_KILL = 5  # cases seen mid-send, and on timers, just before the kill
# Sends and timers of the others last a second or a few: a fast worker, or a poll slowed by a
# busy machine, can pass every moment when enough of both are seen. So that many cases are made
# certain to be in both, whatever the machine's speed: their mail server stalls until the kill,
# and their Closing lasts long enough to be seen.
SLOW_CLOSING = DeadlinePolicy(pcr_reminder="3s", pcr_closing="6s", closing_closed="30s")


def kill_plans(prefix: str, count: int, inbox: Any) -> list[Plan]:
    """The mixed plans, a few of them stalled in a send and a few on a long Closing."""
    plans = mixed_plans(prefix, count, POLICY)
    for plan in [p for p in plans if p.label == "tier2-confirmed"][:BOTH_AT_THE_KILL]:
        inbox.hold(plan.case.contact_email)
    for plan in [p for p in plans if p.label == "resolved"][:BOTH_AT_THE_KILL]:
        plan.case = case_input(plan.number, SLOW_CLOSING)
    return plans


async def finish(
    client: Client,
    inbox: Any,
    store: CaseStore,
    plans: list[Plan],
    tally: Tally,
    timeout: float = RECOVERY_WITHIN,
) -> int:
    expected = {p.workflow_id: expect(p) for p in plans}
    wanted = {m for e in expected.values() for m in e.message_ids}
    ids = [p.workflow_id for p in plans]

    async def done() -> bool:
        if not await arrived(store, plans, wanted, set(message_ids(inbox.messages))):
            return False
        described = await describe_all(client, ids)
        return all(d.case_status == str(expected[d.workflow_id].status) for d in described)

    async def progress() -> str:
        missing = wanted - set(message_ids(inbox.messages))
        kinds = Counter(m.split(".notify.")[-1].split("@")[0] for m in missing)
        described = await describe_all(client, ids)
        statuses = Counter(d.case_status for d in described)
        problems = [p for d in described for p in d.activity_problems][:5]
        return (
            f"{len(wanted) - len(missing)}/{len(wanted)} emails; missing {dict(kinds)}; "
            f"cases now {dict(statuses)}; activities: {problems}"
        )

    await wait_until(done, timeout, progress)
    await asyncio.sleep(1.0)  # a late duplicate would arrive now
    await check_outcome(
        client, store, plans, expected, message_ids(inbox.messages), tally, killed=True
    )
    return await check_deadline_instants(store, plans)


async def mid_send(store: CaseStore, plans: list[Plan]) -> int:
    """Cases with a message handed to the mail server and not yet marked sent."""
    numbers = {p.number for p in plans}
    pending = await store.outbox(pending_only=True)
    return len({e.case_number for e in pending if e.handed_at and e.case_number in numbers})


async def kill_when_busy(
    client: Client,
    worker: WorkerProcess,
    inbox: Any,
    store: CaseStore,
    plans: list[Plan],
    fraction: float,
) -> tuple[int, int]:
    """Kill -9 once ``fraction`` of the emails arrived and the cases are seen both mid-send and
    on timers (``kill_plans`` makes sure some are), then let the stalled sends go; how many
    cases were in each at the kill. Under load the first emails are all openings, so an email
    count alone may catch no case on a timer yet (or every timer done)."""
    wanted = sum(len(expect(p).message_ids) for p in plans)
    ids = [p.workflow_id for p in plans]
    seen = (0, 0)

    async def busy() -> bool:
        nonlocal seen
        if len(inbox.messages) < wanted * fraction:
            return False
        described = await describe_all(client, ids)
        seen = (
            await mid_send(store, plans),
            sum(d.case_status in WITH_TIMERS for d in described),
        )
        # A margin: a case seen in either an instant before the kill is still there at it.
        return min(seen) >= BOTH_AT_THE_KILL

    async def progress() -> str:
        return (
            f"{len(inbox.messages)}/{wanted} emails before the kill, "
            f"{seen[0]} cases mid-send and {seen[1]} on timers\n{worker.tail()}"
        )

    await wait_until(busy, 120, progress)
    worker.kill()
    in_send = await mid_send(store, plans)
    inbox.release()
    at_kill = await describe_all(client, ids)
    on_timers = sum(d.case_status in WITH_TIMERS for d in at_kill)
    assert in_send > 0, "the kill should catch cases mid-send"
    assert on_timers > 0, "the kill should catch cases waiting on timers"
    return in_send, on_timers


async def test_worker_kill_9_with_200_cases_mid_lifecycle(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    url = await postgres_databases.create()
    task_queue = unique("kill9")
    settings = case_worker_environment(env, task_queue, url, inbox)
    plans = kill_plans(unique("K"), 200, inbox)
    first = spawn_worker(settings, "first")
    await first.ready()
    store = CaseStore(url)
    try:
        await open_and_drive(env.client, task_queue, plans)
        in_send, on_timers = await kill_when_busy(env.client, first, inbox, store, plans, 0.3)

        await asyncio.sleep(3)  # nobody works: timers fall due with no worker up
        started = time.monotonic()
        second = spawn_worker(settings, "restarted")
        await second.ready()
        timers = await finish(env.client, inbox, store, plans, tally)
    finally:
        await store.dispose()
    tally.notes = (
        f"{describe_plans(plans)}; at the kill: {in_send} mid-send, "
        f"{on_timers} on timers; recovered {time.monotonic() - started:.0f} s after restart; "
        f"{timers} timer transitions at their instants; {tally.in_doubt} sends cut by the "
        "kill resent in doubt"
    )


async def test_two_workers_one_killed_the_other_finishes(
    env: Any,
    inbox: Any,
    postgres_databases: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    url = await postgres_databases.create()
    task_queue = unique("pair")
    settings = case_worker_environment(env, task_queue, url, inbox)
    plans = kill_plans(unique("P"), 100, inbox)
    doomed, survivor = spawn_worker(settings, "doomed"), spawn_worker(settings, "survivor")
    await asyncio.gather(doomed.ready(), survivor.ready())
    store = CaseStore(url)
    try:
        await open_and_drive(env.client, task_queue, plans)
        in_send, on_timers = await kill_when_busy(env.client, doomed, inbox, store, plans, 0.3)
        sent_by_doomed = sum(1 for line in doomed.lines() if line.get("event") == "notify.sent")
        assert sent_by_doomed > 0, "both workers should have taken work before the kill"

        started = time.monotonic()
        timers = await finish(env.client, inbox, store, plans, tally)
    finally:
        await store.dispose()
    sent_by_survivor = sum(1 for line in survivor.lines() if line.get("event") == "notify.sent")
    assert survivor.running()
    tally.notes = (
        f"{describe_plans(plans)}; emails sent by the killed worker {sent_by_doomed}, "
        f"by the survivor {sent_by_survivor}; at the kill: {in_send} mid-send, "
        f"{on_timers} on timers; finished {time.monotonic() - started:.0f} s after the kill; "
        f"{timers} timer transitions at their instants; {tally.in_doubt} sends cut by the "
        "kill resent in doubt"
    )
