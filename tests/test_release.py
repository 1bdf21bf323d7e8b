"""Releases: a release ships at its instant or earlier, tells every case that waits on it once,
including the cases that register late or while it is telling the others."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities import CaseStore, upgrade
from activities.releases import ReleaseActivities
from starter.client import CaseRejected
from starter.schedules import (
    CalendarError,
    TrainExists,
    create_train,
    delete_train,
    describe_train,
    list_trains,
    parse_calendar,
)
from tests.releases import (
    deliveries,
    listener_worker,
    register,
    release_handle,
    release_status,
    seed_pending_release,
    shipped_mails,
    snapshots,
    start_listeners,
    start_release_carrying,
    wait_fan_out_checkpoint,
    wait_release,
)
from tests.scenario import CUSTOMER, TIER1, TIER2, Case
from worker import build_worker
from workflows import release as release_module
from workflows.contract import (
    RELEASE_WORKFLOW,
    ReleaseInput,
    ReleaseShipped,
    ReleaseStatus,
    Reschedule,
    TrainInput,
    release_workflow_id,
)
from workflows.train import TrainResult, train_release

DAY = timedelta(days=1)
MARGIN = timedelta(minutes=1)


async def to_development(case: Case) -> None:
    await case.to("Tier 1 Analysis", TIER1)
    await case.handoff(2, "defect_verification", TIER1)
    await case.walk(("Tier 2 Analysis", TIER2), ("Development", TIER2))


async def pending_release(case: Case, release_id: str) -> None:
    await to_development(case)
    await case.to("Pending Release", TIER2, release_id=release_id)


async def test_a_release_ships_at_its_instant_and_the_cases_close_two_weeks_later(
    env, case_worker, worker_settings, inbox, unique
):
    release = unique("2026.12")
    cases = [Case(env, worker_settings.task_queue, unique(f"at-{i}")) for i in range(2)]
    ships_at = (datetime.now(UTC) + 3 * DAY).replace(microsecond=0)
    await cases[0].client.schedule_release(ReleaseInput(release_id=release, ships_at=ships_at))
    for case in cases:
        await case.open()
        await pending_release(case, release)
    status = await wait_release(env.client, release, lambda s: s.cases_registered == 2)
    assert status.ships_at == ships_at and status.shipped_at is None

    # Every workflow has its own virtual clock: the cases live past the instant first (nothing
    # happens to them), so that they receive the news "after" it, as in real time.
    for case in cases:
        await case.pass_until(ships_at + MARGIN)
    waiting = await snapshots(env.client, worker_settings.task_queue, [c.number for c in cases])
    assert {s.status for s in waiting.values()} == {"Pending Release"}

    handle = release_handle(env.client, release)
    await env.fast_forward(handle, ships_at - await env.get_current_time(handle) + MARGIN)
    status = await wait_release(env.client, release, lambda s: s.cases_notified == 2)
    assert status.shipped_at == ships_at and status.cases_to_notify == 0
    for case in cases:
        snap = await case.wait(lambda s: s.release_shipped_at is not None)
        assert snap.release_shipped_at == ships_at
        assert snap.next_deadline and snap.next_deadline.at == ships_at + 14 * DAY

    await cases[0].pass_until(ships_at + 14 * DAY + MARGIN)
    snap = await cases[0].wait_status("Closing")
    assert snap.status_since == ships_at + 14 * DAY
    assert shipped_mails(inbox, release) == {c.number: 1 for c in cases}


async def test_ship_now_ships_early_and_a_shipped_release_keeps_its_instant(
    env, case_worker, worker_settings, inbox, unique
):
    release = unique("2027.01")
    case = await Case(env, worker_settings.task_queue, unique("early")).open()
    ships_at = (datetime.now(UTC) + 30 * DAY).replace(microsecond=0)
    await case.client.schedule_release(ReleaseInput(release_id=release, ships_at=ships_at))
    await pending_release(case, release)
    await wait_release(env.client, release, lambda s: s.cases_registered == 1)

    before = datetime.now(UTC)
    await case.client.ship_now(release)
    status = await wait_release(env.client, release, lambda s: s.cases_notified == 1)
    assert status.shipped_at is not None and before - MARGIN < status.shipped_at < ships_at
    snap = await case.wait(lambda s: s.release_shipped_at is not None)
    assert snap.release_shipped_at == status.shipped_at
    assert snap.next_deadline and snap.next_deadline.at == status.shipped_at + 14 * DAY

    # Shipped: a reschedule by update is refused with the reason, one by signal is ignored.
    handle = release_handle(env.client, release)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            "reschedule", Reschedule(ships_at=ships_at + DAY), result_type=ReleaseStatus
        )
    assert isinstance(refused.value.cause, ApplicationError)
    assert "cannot be rescheduled" in refused.value.cause.message
    await case.client.reschedule_release(release, ships_at + DAY)
    await case.client.ship_now(release)  # a second ship-now changes nothing
    await asyncio.sleep(0.3)
    assert await release_status(env.client, release) == status
    await inbox.wait_for(Subject=f"release {release} has shipped")
    assert shipped_mails(inbox, release) == {case.number: 1}


async def test_reschedule_moves_the_instant_and_a_past_instant_ships_at_once(
    env, case_worker, worker_settings, unique
):
    cases = Case(env, worker_settings.task_queue, unique("unused")).client
    later, sooner = unique("2027.02"), unique("2027.03")
    now = datetime.now(UTC).replace(microsecond=0)

    # By signal: from 30 days to 2 days ahead; the release's own clock shows it ships then.
    await cases.schedule_release(ReleaseInput(release_id=later, ships_at=now + 30 * DAY))
    await cases.reschedule_release(later, now + 2 * DAY)
    await wait_release(env.client, later, lambda s: s.ships_at == now + 2 * DAY)
    handle = release_handle(env.client, later)
    await env.fast_forward(handle, DAY)
    assert (await release_status(env.client, later)).shipped_at is None
    await env.fast_forward(handle, DAY + MARGIN)
    status = await wait_release(env.client, later, lambda s: s.shipped_at is not None)
    assert status.shipped_at == now + 2 * DAY

    # By update: answered with the status; an instant that has passed ships at once, then.
    await cases.schedule_release(ReleaseInput(release_id=sooner, ships_at=now + 30 * DAY))
    status = await release_handle(env.client, sooner).execute_update(
        "reschedule", Reschedule(ships_at=now - DAY), result_type=ReleaseStatus
    )
    assert status.ships_at == now - DAY and status.shipped_at == now - DAY


async def test_a_case_entering_after_the_release_shipped_starts_its_clock_at_once(
    env, case_worker, worker_settings, inbox, unique
):
    release, other = unique("2027.04"), unique("2027.05")
    case = await Case(env, worker_settings.task_queue, unique("late")).open()
    await case.client.schedule_release(ReleaseInput(release_id=release))  # not scheduled yet
    await case.client.ship_now(release)
    shipped = await wait_release(env.client, release, lambda s: s.shipped_at is not None)
    await case.pass_time(3 * DAY)

    await pending_release(case, release)
    snap = await case.wait(lambda s: s.release_shipped_at is not None)
    assert snap.release_shipped_at == shipped.shipped_at
    assert snap.next_deadline and snap.next_deadline.at == snap.status_since + 14 * DAY

    # The case leaves the release (the fix did not work), waits on another, then comes back:
    # told again at once, although the release told it before.
    await case.to("Pending Customer Testing", CUSTOMER)
    await case.reply("Still broken after the update.")
    await case.walk(("Tier 2 Analysis", TIER2), ("Development", TIER2))
    await case.to("Pending Release", TIER2, release_id=other)
    assert (await case.snapshot()).release_shipped_at is None
    with pytest.raises(CaseRejected) as refused:  # nothing to test before the other ships
        await case.to("Pending Customer Testing", CUSTOMER)
    assert refused.value.reason == "guard"
    await case.client.ship_now(other)  # the case's registration started it
    await case.wait(lambda s: s.release_shipped_at is not None)
    await case.to("Pending Customer Testing", CUSTOMER)
    await case.reply("Not that one either.")
    await case.walk(("Tier 2 Analysis", TIER2), ("Development", TIER2))
    back = await case.to("Pending Release", TIER2, release_id=release)
    snap = await case.wait(lambda s: s.release_shipped_at is not None)
    assert snap.next_deadline and snap.next_deadline.at == back.status_since + 14 * DAY
    await wait_release(env.client, release, lambda s: s.cases_notified == 2)
    await inbox.wait_for(2, Subject=f"release {release} has shipped")


async def test_a_repeated_release_shipped_has_one_effect(
    env, case_worker, worker_settings, inbox, unique
):
    release = unique("2027.06")
    case = await Case(env, worker_settings.task_queue, unique("dup")).open()
    await pending_release(case, release)
    await wait_release(env.client, release, lambda s: s.cases_registered == 1)
    # The case's registration delivered again (a retried activity): still one case to tell.
    await env.client.start_workflow(
        RELEASE_WORKFLOW,
        ReleaseInput(release_id=release),
        id=release_workflow_id(release),
        task_queue=worker_settings.task_queue,
        start_signal="register_case",
        start_signal_args=[{"case_number": case.number}],
    )
    await case.client.ship_now(release)
    status = await wait_release(env.client, release, lambda s: s.cases_to_notify == 0)
    assert status.cases_registered == status.cases_notified == 1
    first = await case.wait(lambda s: s.release_shipped_at is not None)
    # Delivered twice more, once by the project's client and once as ops would, by hand.
    for _ in range(2):
        await case.client.release_shipped(
            case.number, ReleaseShipped(release_id=release, shipped_at=datetime.now(UTC))
        )
    await inbox.wait_for(Subject=f"release {release} has shipped")
    snap = await case.settle(0.5)
    assert snap.release_shipped_at == first.release_shipped_at
    assert snap.next_deadline == first.next_deadline
    assert not snap.rejected
    assert shipped_mails(inbox, release) == {case.number: 1}


async def test_the_customer_switches_to_testing_within_the_two_weeks(
    env, case_worker, worker_settings, inbox, unique
):
    release = unique("2027.07")
    case = await Case(env, worker_settings.task_queue, unique("pct")).open()
    await pending_release(case, release)
    # Another customer wants to test before the release ships: nothing to test yet.
    early = await Case(env, worker_settings.task_queue, unique("pct-early")).open()
    await pending_release(early, release)
    await wait_release(env.client, release, lambda s: s.cases_registered == 2)
    with pytest.raises(CaseRejected) as refused:
        await early.to("Pending Customer Testing", CUSTOMER)
    assert refused.value.reason == "guard" and "has not shipped" in str(refused.value)
    await case.client.ship_now(release)
    shipped = await case.wait(lambda s: s.release_shipped_at is not None)
    assert shipped.next_deadline and shipped.next_deadline.to == "Closing"
    told = await early.wait(lambda s: s.release_shipped_at is not None)
    assert told.status == "Pending Release" and not told.rejected
    await inbox.wait_for(2, Subject=f"release {release} has shipped")
    assert shipped_mails(inbox, release) == {case.number: 1, early.number: 1}

    await case.pass_time(10 * DAY)
    snap = await case.to("Pending Customer Testing", CUSTOMER)
    assert snap.next_deadline and snap.next_deadline.to == "Closed"
    assert snap.next_deadline.at > shipped.next_deadline.at + 300 * DAY  # 11 months, not 14 days
    await case.pass_time(5 * DAY)  # past the release's two weeks: nothing happens
    assert (await case.settle(0.3)).status == "Pending Customer Testing"


async def test_invalid_release_input_fails_the_workflow_clearly(env, case_worker, worker_settings):
    for raw, words in (
        ({"release_id": "no spaces allowed", "ships_at": None}, "release_id"),
        ({"release_id": "2027.08", "ships_at": "tomorrow"}, "ships_at"),
        ({"release_id": "2027.09"}, "must run as workflow release-2027.09"),
    ):
        handle = await env.client.start_workflow(
            RELEASE_WORKFLOW,
            raw,
            id=f"release-invalid-{time.monotonic_ns()}",
            task_queue=worker_settings.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 10)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == "InvalidReleaseInput" and cause.non_retryable
        assert words in cause.message


def pause_fan_out(
    monkeypatch, after: int, *, delivered: bool = False
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold each signal of the fan-out past the first ``after`` until ``resume`` is set;
    ``midway`` says it got there. ``delivered``: hold after the signal was sent (a crash then
    loses the news that it was), instead of before."""
    midway, resume = asyncio.Event(), asyncio.Event()
    tell = ReleaseActivities._tell
    calls = 0

    async def held(self, case_number, event):
        nonlocal calls
        calls += 1
        if calls <= after:
            return await tell(self, case_number, event)
        told = await tell(self, case_number, event) if delivered else None
        midway.set()
        await resume.wait()
        return told if delivered else await tell(self, case_number, event)

    monkeypatch.setattr(ReleaseActivities, "_tell", held)
    return midway, resume


async def test_a_case_registering_while_2000_cases_are_told_is_reached(
    env, case_worker, worker_settings, inbox, unique, monkeypatch
):
    """A release carries 2,000 registered cases: 400 stand-ins that count what they get, 1,597
    cases closed meanwhile (skipped) and 3 real cases. A real case enters Pending Release
    while the release is telling them, and is told too; everyone is told once."""
    release, listeners = unique("2027.10"), unique("listeners")
    alive = [unique(f"bulk{i:04}") for i in range(400)]
    gone = [unique(f"gone{i:04}") for i in range(1_597)]
    real = [unique(f"real{i}") for i in range(3)]
    bulk = [alive[i // 5] if i % 5 == 0 else gone[i - i // 5 - 1] for i in range(1_997)]
    midway, resume = pause_fan_out(monkeypatch, after=1_300)
    async with listener_worker(env.client, listeners):
        await start_listeners(env.client, listeners, alive)
        await start_release_carrying(env.client, worker_settings.task_queue, release, bulk)
        await seed_pending_release(env.client, worker_settings.task_queue, real, release)
        late = await Case(env, worker_settings.task_queue, unique("while")).open()
        await to_development(late)
        await wait_release(env.client, release, lambda s: s.cases_registered == 2_000)

        started = time.monotonic()
        await late.client.ship_now(release)
        await asyncio.wait_for(midway.wait(), 60)
        during = await release_status(env.client, release)
        assert during.shipped_at is not None and during.cases_to_notify > 0
        await late.to("Pending Release", TIER2, release_id=release)
        await wait_release(env.client, release, lambda s: s.cases_registered == 2_001)
        resume.set()

        done = await wait_release(env.client, release, lambda s: s.cases_to_notify == 0, 60)
        told_in = time.monotonic() - started
        assert done.cases_registered == done.cases_notified == 2_001
        told = await deliveries(env.client, alive)
        assert {n: c for n, c in told.items() if c != 1} == {}
        for number in [*real, late.number]:
            snap = await Case(env, worker_settings.task_queue, number).wait(
                lambda s: s.release_shipped_at is not None
            )
            assert snap.release_shipped_at == done.shipped_at
        await inbox.wait_for(4, Subject=f"release {release} has shipped")
    print(f"2,001 cases told in {told_in:.1f}s")


# Unsandboxed, so that the test's lower history bound reaches the workflow code (the bound is
# the worker's, no part of any input).
@pytest.mark.parametrize("worker_settings", [False], indirect=True)
async def test_registrations_and_fan_out_continue_as_new_and_keep_every_case(
    env, worker_settings, unique, monkeypatch
):
    """Each registration is one event of the release's history: past its bound the release
    continues as new, carrying the cases not told yet; none is lost or told twice."""
    monkeypatch.setattr(release_module, "RELEASE_HISTORY_BOUND", 80)
    await upgrade(worker_settings.database_url)
    store = CaseStore(worker_settings.database_url)
    async with build_worker(env.client, worker_settings, store):
        await _registrations_continue_as_new(env, worker_settings, unique)
    await store.dispose()


async def _registrations_continue_as_new(env, worker_settings, unique):
    release, listeners = unique("2027.11"), unique("listeners")
    numbers = [unique(f"can{i:03}") for i in range(150)]
    handle = await start_release_carrying(env.client, worker_settings.task_queue, release, [])
    first_run = (await handle.describe()).run_id
    async with listener_worker(env.client, listeners):
        await start_listeners(env.client, listeners, numbers)
        await register(env.client, worker_settings.task_queue, release, numbers)
        await register(env.client, worker_settings.task_queue, release, numbers[:30])  # again
        status = await wait_release(env.client, release, lambda s: s.cases_registered == 150)
        assert status.cases_to_notify == 150
        await env.client.get_workflow_handle(release_workflow_id(release)).signal("ship_now")
        await wait_release(env.client, release, lambda s: s.cases_notified == 150)
        assert set((await deliveries(env.client, numbers)).values()) == {1}
    current = release_handle(env.client, release)
    # continued as new at least once, and the run now open is short
    assert (await current.describe()).run_id != first_run
    assert len([e async for e in current.fetch_history_events()]) < 80 + 60


async def test_a_worker_killed_mid_fan_out_resumes_and_every_case_is_told_once(
    env, worker_settings, inbox, unique, monkeypatch
):
    """The worker running the fan-out stops half-way; another one takes the retried activity
    from its last checkpoint. Signals in flight at the crash are sent again, but each case
    acts on its release once: one email, one ship instant."""
    release, listeners = unique("2027.12"), unique("listeners")
    alive = [unique(f"crash{i:03}") for i in range(300)]
    real = [unique(f"real{i}") for i in range(3)]
    # The first attempt sends 150 signals and records them; it sends the next ones (the real
    # cases among them) but dies before it can record that it did.
    midway, resume = pause_fan_out(monkeypatch, after=150, delivered=True)
    tells: Counter[int] = Counter()  # signals sent by each attempt of the fan-out activity
    held = ReleaseActivities._tell

    async def counted(self, case_number, event):
        tells[activity.info().attempt] += 1
        return await held(self, case_number, event)

    monkeypatch.setattr(ReleaseActivities, "_tell", counted)
    await upgrade(worker_settings.database_url)
    store = CaseStore(worker_settings.database_url)
    try:
        async with listener_worker(env.client, listeners):
            await start_listeners(env.client, listeners, alive)
            pending = [*alive[:151], *real, *alive[151:]]
            await start_release_carrying(env.client, worker_settings.task_queue, release, pending)
            first = build_worker(
                env.client, worker_settings, store, graceful_shutdown_timeout=timedelta(0)
            )
            running = asyncio.create_task(first.run())
            await seed_pending_release(env.client, worker_settings.task_queue, real, release)
            await wait_release(env.client, release, lambda s: s.cases_registered == 303)
            await env.client.get_workflow_handle(release_workflow_id(release)).signal("ship_now")
            await asyncio.wait_for(midway.wait(), 30)
            await wait_fan_out_checkpoint(env.client, release, 150)
            await first.shutdown()  # the fan-out is cut off half-way
            await running

            async with build_worker(env.client, worker_settings, store):
                resume.set()
                done = await wait_release(env.client, release, lambda s: s.cases_to_notify == 0)
                assert done.cases_registered == done.cases_notified == 303
                told = await deliveries(env.client, alive)
                assert min(told.values()) == 1
                again = sum(told.values()) - len(told)
                for number in real:
                    snap = await Case(env, worker_settings.task_queue, number).wait(
                        lambda s: s.release_shipped_at is not None
                    )
                    assert snap.release_shipped_at == done.shipped_at
                await inbox.wait_for(3, Subject=f"release {release} has shipped")
                await asyncio.sleep(0.5)
                assert shipped_mails(inbox, release) == {n: 1 for n in real}
    finally:
        await store.dispose()
    # The second attempt resumed from the first one's checkpoint, not from the start, and
    # sent again what the first had sent after it.
    assert set(tells) == {1, 2} and tells[2] == 303 - 150, tells
    assert 0 < again < tells[1] - 150
    print(f"tells per attempt {dict(tells)}; {again} stand-ins got the signal twice")


async def test_a_release_train_schedule_fires_and_opens_its_release(
    env, case_worker, worker_settings, unique
):
    """A train is a Temporal Schedule (monthly, say); each firing opens the release named after
    its ship instant: it creates it, or schedules the one cases registered with already."""
    name = unique("alma")
    train = TrainInput(train=name, release_format=f"{name}-%Y.%m.%d", ships_after="3d")
    expected, _ = train_release(train, datetime.now(UTC))
    # A case names the coming release before the train opens it: created, not scheduled.
    await register(env.client, worker_settings.task_queue, expected, [unique("early")])
    status = await wait_release(env.client, expected, lambda s: s.cases_registered == 1)
    assert status.ships_at is None

    handle = await create_train(
        env.client, train, parse_calendar("monthly"), task_queue=worker_settings.task_queue
    )
    described = await describe_train(env.client, name)
    assert described is not None and described.calendar == "day_of_month=1 hour=6"
    assert all(f.day == 1 and f.hour == 6 for f in described.next_fires)
    with pytest.raises(TrainExists):
        await create_train(
            env.client, train, parse_calendar("weekly"), task_queue=worker_settings.task_queue
        )

    await handle.trigger()  # as if the first of the month had come
    fired = None
    for _ in range(100):
        fired = await describe_train(env.client, name)
        if fired and fired.recent:
            break
        await asyncio.sleep(0.1)
    assert fired and fired.recent
    scheduled_at, workflow_id = fired.recent[-1]
    assert workflow_id.startswith(f"release-train-{name}-")  # Temporal appends the instant
    result = await env.client.get_workflow_handle(workflow_id, result_type=TrainResult).result()
    assert abs(result.scheduled_at - scheduled_at) < timedelta(seconds=1)
    assert result.ships_at == result.scheduled_at + 3 * DAY
    assert result.release_id == train_release(train, result.scheduled_at)[0]

    status = await release_status(env.client, result.release_id)
    assert status.ships_at == result.ships_at and status.shipped_at is None
    if result.release_id == expected:  # (unless the test ran across midnight UTC)
        assert status.cases_registered == 1

    # On the UI's Schedules page, and in `release list`: eventually consistent.
    for _ in range(100):
        if any(t.train == name for t in await list_trains(env.client)):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"train {name} not listed")
    await delete_train(env.client, name)


def test_calendars_read_like_the_docs():
    monthly = parse_calendar("monthly")
    assert [r.start for r in monthly.day_of_month] == [1] and monthly.hour[0].start == 6
    spec = parse_calendar("day_of_week=mon-fri hour=9,17 minute=*/15 month=jan")
    assert (spec.day_of_week[0].start, spec.day_of_week[0].end) == (1, 5)
    assert [r.start for r in spec.hour] == [9, 17]
    assert (spec.minute[0].start, spec.minute[0].end, spec.minute[0].step) == (0, 59, 15)
    assert spec.month[0].start == 1
    for bad, words in (
        ("", "empty"),
        ("hour", "field=values"),
        ("hours=6", "unknown field"),
        ("hour=24", "0..23"),
        ("hour=9-5", "ends before"),
        ("hour=6 hour=7", "twice"),
    ):
        with pytest.raises(CalendarError, match=words):
            parse_calendar(bad)
    assert train_release(TrainInput(train="t"), datetime(2026, 12, 1, 6, tzinfo=UTC)) == (
        "2026.12",
        datetime(2026, 12, 1, 6, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="not a release id"):
        train_release(TrainInput(train="t", release_format="%Y %m"), datetime.now(UTC))
