"""Release fan-out: N cases in Pending Release, one ``ship_now``, until every case knows.

    .venv/bin/python -m bench.release_fanout [-n 10000] [--concurrency 64]

One dev server (in memory), two worker processes (``bench.common``):

- ``engine``: the project's worker (``worker.build_worker``, real activities: SQLite store, the
  outbox for email), holding N ``SupportCase`` workflows in Pending Release for one release.
  The setup is not measured: the cases start already in Pending Release, from the state the
  pure core computes for open → Tier 1 → Tier 2 → Development → Pending Release, as a continued
  run starts (six events per case would make the setup take far longer and measure nothing of
  the fan-out); the release carries them as registered (``--register cases``: each case
  registers by its own activity, as in production, where they come one by one over weeks; all
  at once, they are N signals to one workflow, which the server takes one at a time).
- ``bare``: ``bench.bare.BareDeadline`` workflows, Temporal with no case logic, waiting.

Three phases, one after the other, ``--concurrency`` signals in flight in each:

A. **release → cases**: ``ship_now`` to the release. *Delivered*: the last fan-out activity
   completes (its event's time in the release's history: every case signalled). *Seen*: a
   visibility count says every case has acted (a case that learns that its release shipped sets
   ``CaseNextDeadline``, its 14 days). Then every case's ``snapshot`` is read (not timed):
   *missed* counts those that do not show ``release_shipped_at``.
B. **release → bare**: a second release, carrying N registered bare waiting workflows (as a
   continued run would), ships; *delivered* as in A. The same targets as C: the release
   machinery against a client loop, nothing else different.
C. **raw loop → bare**: the same ``release_shipped`` signal from this process to N other bare
   waiting workflows; *delivered* when the last call returns.

Rates are cases per second; each ratio is a release rate over the raw loop's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench import bare
from bench.common import (
    banner,
    bounded,
    dev_server,
    load,
    measured,
    table,
    worker_process,
    write_results,
)
from starter.client import CaseClient, case_query
from tests.releases import pending_release_state
from tests.seed import start_continued
from workflows.contract import (
    CASE_WORKFLOW,
    RELEASE_WORKFLOW,
    FanOutResult,
    ReleaseShipped,
    ReleaseStatus,
    Status,
    case_workflow_id,
    release_workflow_id,
)
from workflows.release import CarriedRelease, ReleaseState

POLL_EVERY = 0.1


async def release_status(client: Client, release_id: str) -> ReleaseStatus | None:
    try:
        handle = client.get_workflow_handle(release_workflow_id(release_id))
        return await handle.query("status", result_type=ReleaseStatus)
    except Exception:  # not there yet, or between two runs (continue-as-new)
        return None


async def until(check: Any, timeout: float, every: float = POLL_EVERY) -> float:
    """Poll ``check`` (async, truthy when done) every ``every`` s; the monotonic time it held."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout:.0f} s")
        await asyncio.sleep(every)
    return time.monotonic()


async def seed(
    client: Client,
    task_queue: str,
    numbers: list[str],
    release_id: str,
    concurrency: int,
    *,
    registers: bool,
) -> float:
    """N cases in Pending Release, registered with the release: by their own activity
    (``registers``: N signals to the one release workflow, which the server takes one at a
    time), or carried by the release from the start, as a continued run carries them."""
    now = datetime.now(UTC)
    started = time.monotonic()
    if not registers:
        # Carried state is taken only from a continue-as-new of the workflow's own (a run
        # continued from a seed run: ``tests/seed.py``).
        carried = ReleaseState(release_id=release_id, pending=numbers, registered=len(numbers))
        seed = [(release_workflow_id(release_id), CarriedRelease(carried=carried))]
        await start_continued(client, RELEASE_WORKFLOW, task_queue, seed)

    cases = [
        (case_workflow_id(n), pending_release_state(n, release_id, now=now, registers=registers))
        for n in numbers
    ]
    await start_continued(client, CASE_WORKFLOW, task_queue, cases, concurrency=concurrency)

    async def registered() -> bool:
        status = await release_status(client, release_id)
        return status is not None and status.cases_registered == len(numbers)

    await until(registered, timeout=3_600, every=1.0)
    return time.monotonic() - started


async def fanned_out(client: Client, release_id: str) -> tuple[int, datetime | None]:
    """Cases the release's fan-out activities have done, and when the last one completed (by
    the server's clock), read from its history: no query, which would queue for the worker."""
    handle = client.get_workflow_handle(release_workflow_id(release_id))
    done, last = 0, None
    converter = client.data_converter.payload_converter
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            payloads = list(event.activity_task_completed_event_attributes.result.payloads)
            result = converter.from_payloads(payloads, [FanOutResult])[0]
            done += result.signalled + result.skipped
            last = event.event_time.ToDatetime(tzinfo=UTC)
    return done, last


async def ship(client: Client, release_id: str, count: int, timeout: float) -> tuple[float, Any]:
    """Ship the release; the seconds until the last case was signalled, and the final status."""

    async def told() -> bool:
        return (await fanned_out(client, release_id))[0] >= count

    sent = datetime.now(UTC)
    await client.get_workflow_handle(release_workflow_id(release_id)).signal("ship_now")
    await until(told, timeout, every=0.5)
    _, last = await fanned_out(client, release_id)
    assert last is not None
    status = None
    while status is None or status.cases_notified < count:  # the release has taken it in
        await asyncio.sleep(0.5)
        status = await release_status(client, release_id)
    return (last - sent).total_seconds(), status


def seen_by(client: Client, release_id: str, count: int) -> Any:
    """True once every case of the release has acted on ``release_shipped`` (visibility)."""
    query = f'WorkflowType = "{CASE_WORKFLOW}" AND ' + case_query(
        status=str(Status.PENDING_RELEASE),
        release_id=release_id,
        query="CaseNextDeadline IS NOT NULL",
    )

    async def seen() -> bool:
        return (await client.count_workflows(query)).count >= count

    return seen


async def missed(client: Client, task_queue: str, numbers: list[str], shipped_at: datetime) -> int:
    """How many cases' snapshots do not show this ship instant."""
    cases = CaseClient(client, task_queue)

    async def shows(number: str) -> bool:
        return (await cases.snapshot(number)).release_shipped_at == shipped_at

    return (await bounded(64, (shows(n) for n in numbers))).count(False)


async def release_to_cases(
    client: Client, task_queue: str, numbers: list[str], release_id: str, timeout: float
) -> dict[str, Any]:
    started = time.monotonic()
    delivered, status = await ship(client, release_id, len(numbers), timeout)
    t_seen = await until(seen_by(client, release_id, len(numbers)), timeout, every=0.5) - started
    return {
        "delivered_s": delivered,
        "seen_s": t_seen,
        "missed": await missed(client, task_queue, numbers, status.shipped_at),
        "registered": status.cases_registered,
        "notified": status.cases_notified,
    }


async def raw_to_cases(
    client: Client,
    task_queue: str,
    numbers: list[str],
    release_id: str,
    concurrency: int,
    timeout: float,
) -> dict[str, Any]:
    shipped_at = datetime.now(UTC)
    event = ReleaseShipped(release_id=release_id, shipped_at=shipped_at)
    gate = asyncio.Semaphore(concurrency)

    async def signal(number: str) -> None:
        async with gate:
            handle = client.get_workflow_handle(case_workflow_id(number))
            await handle.signal("release_shipped", event)

    started = time.monotonic()
    await asyncio.gather(*(signal(n) for n in numbers))
    delivered = time.monotonic() - started
    t_seen = await until(seen_by(client, release_id, len(numbers)), timeout, every=0.5) - started
    return {
        "delivered_s": delivered,
        "seen_s": t_seen,
        "missed": await missed(client, task_queue, numbers, shipped_at),
    }


async def start_waiters(client: Client, task_queue: str, ids: list[str]) -> None:
    await bounded(
        100,
        (client.start_workflow(bare.BARE_DEADLINE, id=i, task_queue=task_queue) for i in ids),
    )


async def release_to_bare(
    client: Client, engine_q: str, bare_q: str, count: int, run: str, timeout: float
) -> dict[str, Any]:
    release_id = f"bench-bare-{run}"
    numbers = [f"B{run}-{i:05d}" for i in range(count)]
    await start_waiters(client, bare_q, [case_workflow_id(n) for n in numbers])
    carried = ReleaseState(release_id=release_id, pending=numbers, registered=count)
    seed = [(release_workflow_id(release_id), CarriedRelease(carried=carried))]
    await start_continued(client, RELEASE_WORKFLOW, engine_q, seed)
    delivered, status = await ship(client, release_id, count, timeout)
    return {"delivered_s": delivered, "notified": status.cases_notified}


async def raw_loop(
    client: Client, task_queue: str, count: int, concurrency: int, run: str
) -> dict[str, Any]:
    ids = [f"waiter-{run}-{i:05d}" for i in range(count)]
    await start_waiters(client, task_queue, ids)
    event = ReleaseShipped(release_id=f"bench-raw-{run}", shipped_at=datetime.now(UTC))
    gate = asyncio.Semaphore(concurrency)

    async def signal(workflow_id: str) -> None:
        async with gate:
            await client.get_workflow_handle(workflow_id).signal("release_shipped", event)

    started = time.monotonic()
    await asyncio.gather(*(signal(i) for i in ids))
    return {"delivered_s": time.monotonic() - started}


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", "--cases", type=int, default=10_000)
    parser.add_argument(
        "--concurrency", type=int, default=64, help="signals in flight, fan-out and raw loops"
    )
    parser.add_argument("--seed-concurrency", type=int, default=64)
    parser.add_argument(
        "--register",
        choices=["carried", "cases"],
        default="carried",
        help="how the cases are registered before the measurement: carried by the release "
        "(default), or each case by its own activity (slow: N signals to one workflow)",
    )
    parser.add_argument(
        "--no-raw-to-cases",
        action="store_true",
        help="skip phase D (a second N cases to seed: the longest part of the run)",
    )
    parser.add_argument("--timeout", type=float, default=3_600)
    parser.add_argument("--name", default="release_fanout", help="results file name")
    args = parser.parse_args()
    count, run = args.cases, uuid.uuid4().hex[:6]
    with_d = not args.no_raw_to_cases
    # Every case stays in the worker's cache: a signal to an evicted case is a full replay.
    cache = {"max_cached_workflows": count * (2 if with_d else 1) + 1_000}
    options = {**cache, "fan_out_concurrency": args.concurrency}
    release, other = f"bench-{run}", f"bench-raw-{run}"
    numbers = [f"F{run}-{i:05d}" for i in range(count)]
    others = [f"R{run}-{i:05d}" for i in range(count)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    results: dict[str, Any] = {}
    usage: dict[str, Any] = {}

    async with dev_server() as server:
        client = server.client
        engine_q, bare_q = f"bench-engine-{run}", f"bench-bare-{run}"
        async with (
            worker_process("engine", server, engine_q, workdir, options) as engine,
            worker_process("bare", server, bare_q, workdir, cache),
        ):
            banner(f"seeding {count} cases in Pending Release for {release}")
            registers = args.register == "cases"
            seeded = await seed(
                client, engine_q, numbers, release, args.seed_concurrency, registers=registers
            )
            if with_d:
                banner(f"seeding {count} more cases in Pending Release for {other}")
                seeded += await seed(
                    client, engine_q, others, other, args.seed_concurrency, registers=registers
                )
            banner(f"seeded and registered in {seeded:.1f} s; worker RSS {engine.rss() >> 20} MiB")

            async def phase(name: str, work: Any) -> None:
                await engine.quiesce()
                banner(name)
                async with measured(engine, server) as spent:
                    results[name[0]] = await work
                usage[name[0]] = spent[0].__dict__

            await phase(
                "A. release -> cases",
                release_to_cases(client, engine_q, numbers, release, args.timeout),
            )
            if with_d:
                await phase(
                    "D. raw client loop -> cases",
                    raw_to_cases(client, engine_q, others, other, args.concurrency, args.timeout),
                )
            await phase(
                "B. release -> bare waiting workflows",
                release_to_bare(client, engine_q, bare_q, count, run, args.timeout),
            )
            await phase(
                "C. raw client loop -> bare waiting workflows",
                raw_loop(client, bare_q, count, args.concurrency, run),
            )

    raw = results["C"]["delivered_s"]
    rows = [
        ["A. release -> cases: every case signalled", results["A"]["delivered_s"]],
        ["A. release -> cases: every case acted (seen)", results["A"]["seen_s"]],
    ]
    if with_d:
        rows += [
            ["D. raw client loop -> cases: every signal sent", results["D"]["delivered_s"]],
            ["D. raw client loop -> cases: every case acted", results["D"]["seen_s"]],
        ]
    rows += [
        ["B. release -> bare: every workflow signalled", results["B"]["delivered_s"]],
        ["C. raw client loop -> bare: every signal sent", raw],
    ]
    print()
    print(
        table(
            ["phase", "seconds", "cases/s", "ratio to C"],
            [[what, secs, count / secs, raw / secs] for what, secs in rows],
        )
    )
    a = usage["A"]
    summary = f"N = {count}, concurrency {args.concurrency}; missed: A {results['A']['missed']}"
    if with_d:
        speed = results["D"]["seen_s"] / results["A"]["seen_s"]
        summary += f", D {results['D']['missed']}; release vs raw loop, both to cases: {speed:.2f}"
    print(
        f"\n{summary}; release registered {results['A']['registered']}, notified "
        f"{results['A']['notified']}; phase A CPU: worker {a['worker_cpu']:.0f} s, server "
        f"{a['server_cpu']:.0f} s over {a['wall']:.0f} s; seeding {seeded:.0f} s; "
        f"load {load()[0]:.2f}"
    )
    path = write_results(
        args.name,
        {
            "cases": count,
            "concurrency": args.concurrency,
            "options": options,
            "register": args.register,
            "seed_s": seeded,
            "phases": results,
            "usage": usage,
            "rates": {what: count / secs for what, secs in rows},
            "ratio_to_raw_loop": {what: raw / secs for what, secs in rows},
            "load": load(),
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
