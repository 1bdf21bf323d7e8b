"""The bare comparison: Temporal with no case logic at all.

``BareCase`` receives the same signals, sleeps on the same timers and runs the same number of
activities as one ``SupportCase`` going through the benchmark's lifecycle (``LIFECYCLE``), in
the same order, but decides nothing: a signal is a name appended to a queue, a timer is
``workflow.sleep``, an activity is ``bare_effect``, which returns at once (no I/O); a step's
activities run at once, as the case's effect lanes run them. No pydantic,
no search attributes, no current details, no metrics: what Temporal itself costs for that many
signals, timers and activities on the same server, with the SDK's default sandbox.

``BareDeadline`` is the deadline benchmark's counterpart: armed by one signal with an absolute
instant (one activity, as the case's release-shipped email), it sleeps until that instant, runs
two activities (the case's persist and Closing email) and arms a long timer (the case's 14 days
in Closing).

``BarePlaced`` is the scale benchmark's counterpart of a case placed in a waiting status, doing
the same job: started with the activities of each step (the case's opening: a record and an
email; each move: a record, and an email or a registration where the case sends one), it takes
one signal per move but the last, which is a ``move`` update (as the case's placement ends),
then waits; armed like ``BareDeadline``, it acts at the instant the same way.

``BareUpdate`` is the update-latency benchmark's counterpart of a case waiting for people: a
``move`` update runs one activity (the case's persist of the status change) and returns the
number of moves so far; an ``event`` signal does the same without an answer (how the benchmark
grows a long history quickly). It waits on no timer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timedelta

from temporalio import activity, workflow

BARE_CASE = "BareCase"
BARE_DEADLINE = "BareDeadline"
BARE_UPDATE = "BareUpdate"
BARE_PLACED = "BarePlaced"

# One case through the benchmark's lifecycle, step by step: (what, activities after it).
# ``open`` is the start; ``signal`` waits for the next signal; ``timer`` sleeps ``spans[i]``.
LIFECYCLE: tuple[tuple[str, int], ...] = (
    ("open", 2),  # New: persist, "opened" email
    ("signal", 1),  # -> Tier 1 Analysis: persist
    ("signal", 2),  # -> Pending Customer Response: persist, "information requested" email
    ("timer", 1),  # pcr_reminder: reminder email
    ("signal", 2),  # customer_reply -> Waiting for Process: persist, comment to support
    ("signal", 1),  # -> Tier 1 Analysis: persist
    ("signal", 1),  # tier_handoff -> Tier 2 New: persist
    ("signal", 1),  # -> Tier 2 Analysis: persist
    ("signal", 1),  # -> Development: persist
    ("signal", 3),  # -> Pending Release: persist, "pending release" email, register
    ("signal", 1),  # release_shipped: "release shipped" email
    ("timer", 2),  # release_closing -> Closing: persist, "closing" email
    ("timer", 2),  # closing_closed -> Closed: persist, "closed" email
)
SIGNALS = sum(1 for what, _ in LIFECYCLE if what == "signal")
TIMERS = sum(1 for what, _ in LIFECYCLE if what == "timer")
ACTIVITIES = sum(n for _, n in LIFECYCLE)

EFFECT_TIMEOUT = timedelta(seconds=30)


@activity.defn(name="bare_effect")
async def bare_effect(key: str) -> None:
    return None


async def _effects(key: str, count: int) -> None:
    # At once, as the case runs a step's effects (its lanes: record, email, registration).
    await asyncio.gather(
        *(
            workflow.execute_activity(
                "bare_effect", f"{key}:{i}", start_to_close_timeout=EFFECT_TIMEOUT
            )
            for i in range(count)
        )
    )


async def _act_at(due: datetime) -> None:
    """An armed deadline: one activity, then sleep until ``due``, two activities and a long
    timer, as a case hears its release, then moves to Closing and waits 14 days."""
    key = workflow.info().workflow_id
    await _effects(f"{key}:armed", 1)
    left = (due - workflow.now()).total_seconds()
    if left > 0:
        await workflow.sleep(left)
    await _effects(f"{key}:due", 2)
    await workflow.sleep(timedelta(hours=1))


@workflow.defn(name=BARE_CASE)
class BareCase:
    def __init__(self) -> None:
        self._signals: deque[str] = deque()
        self._timers_fired = 0

    @workflow.run
    async def run(self, spans: list[float]) -> int:
        timers = iter(spans)
        for step, (what, activities) in enumerate(LIFECYCLE):
            if what == "signal":
                await workflow.wait_condition(lambda: bool(self._signals))
                self._signals.popleft()
            elif what == "timer":
                await workflow.sleep(next(timers))
                self._timers_fired += 1
            await _effects(f"{workflow.info().workflow_id}:{step}", activities)
        return self._timers_fired

    @workflow.signal
    def event(self, name: str) -> None:
        self._signals.append(name)

    @workflow.query
    def timers_fired(self) -> int:
        return self._timers_fired


@workflow.defn(name=BARE_DEADLINE)
class BareDeadline:
    def __init__(self) -> None:
        self._due: datetime | None = None

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._due is not None)
        assert self._due is not None
        await _act_at(self._due)

    @workflow.signal
    def arm(self, due: str) -> None:
        self._due = datetime.fromisoformat(due)


@workflow.defn(name=BARE_UPDATE)
class BareUpdate:
    def __init__(self) -> None:
        self._moves = 0
        self._signals: deque[str] = deque()

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._signals))
            name = self._signals.popleft()
            await self._move(name)

    async def _move(self, name: str) -> int:
        self._moves += 1
        await _effects(f"{workflow.info().workflow_id}:{self._moves}:{name}", 1)
        return self._moves

    @workflow.update
    async def move(self, name: str) -> int:
        return await self._move(name)

    @workflow.signal
    def event(self, name: str) -> None:
        self._signals.append(name)


@workflow.defn(name=BARE_PLACED)
class BarePlaced:
    def __init__(self) -> None:
        self._signals: deque[str] = deque()
        self._updates = 0
        self._due: datetime | None = None

    @workflow.run
    async def run(self, steps: list[int]) -> None:
        key = workflow.info().workflow_id
        await _effects(f"{key}:0", steps[0])
        for step, activities in enumerate(steps[1:-1], start=1):
            await workflow.wait_condition(lambda: bool(self._signals))
            self._signals.popleft()
            await _effects(f"{key}:{step}", activities)
        await workflow.wait_condition(lambda: self._updates > 0 or self._due is not None)
        await workflow.wait_condition(lambda: self._due is not None)
        assert self._due is not None
        await _act_at(self._due)

    @workflow.signal
    def event(self, name: str) -> None:
        self._signals.append(name)

    @workflow.update
    async def move(self, activities: int) -> int:
        await workflow.wait_condition(lambda: not self._signals)
        await _effects(f"{workflow.info().workflow_id}:last", activities)
        self._updates += 1
        return self._updates

    @workflow.signal
    def arm(self, due: str) -> None:
        self._due = datetime.fromisoformat(due)
