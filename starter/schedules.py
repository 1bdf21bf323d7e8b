"""Release trains: Temporal Schedules that open the next release on a calendar.

A train named ``alma`` is the Schedule ``release-train-alma`` (on the Web UI's Schedules page).
Each time its calendar comes round it starts a ``ReleaseTrain`` workflow (id
``release-train-alma-<scheduled time>``: Temporal appends the instant to every id a schedule
starts), which opens the release that ships ``ships_after`` later, named by
``strftime(release_format)`` of that ship instant: with the defaults a train firing on
2026-12-01 06:00 UTC opens release ``2026.12``, workflow ``release-2026.12``, shipping at once.
Development can name that release on cases ahead of time (cases that register first create the
release unscheduled; the train then schedules it).

::

    from starter.schedules import create_train, parse_calendar
    from workflows.contract import TrainInput

    await create_train(
        client,
        TrainInput(train="alma", release_format="%Y.%m", ships_after="14d"),
        parse_calendar("monthly"),  # day_of_month=1 hour=6 (UTC)
        task_queue="support-cases",
    )
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleHandle,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from workflows.contract import RELEASE_TRAIN_WORKFLOW, TrainInput
from workflows.train import train_release

TRAIN_SCHEDULE_PREFIX = "release-train-"
# A train that could not fire (the server was down) still opens its release this much later.
CATCHUP_WINDOW = timedelta(days=7)

PRESETS = {
    "monthly": "day_of_month=1 hour=6",
    "weekly": "day_of_week=mon hour=6",
    "daily": "hour=6",
}

# Each calendar field with its bounds and, where people use them, names.
_FIELDS: dict[str, tuple[int, int]] = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day_of_month": (1, 31),
    "month": (1, 12),
    "year": (1970, 9999),
    "day_of_week": (0, 6),
}
_NAMES = {
    "month": {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    "day_of_week": {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_PART = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?$")


class CalendarError(ValueError):
    """A calendar the command line cannot read; the message says which part and why."""


class TrainExists(Exception):
    """A train of this name is scheduled already (``replace`` moves it to the new calendar)."""


def train_schedule_id(train: str) -> str:
    return f"{TRAIN_SCHEDULE_PREFIX}{train}"


def parse_calendar(text: str) -> ScheduleCalendarSpec:
    """``monthly`` / ``weekly`` / ``daily``, or ``field=values`` pairs separated by spaces:
    fields ``second minute hour day_of_month month year day_of_week``; values ``*``, ``6``,
    ``1-5``, ``1,15``, ``*/2``, ``mon-fri`` (days ``sun``..``sat``, months ``jan``..``dec``).
    Unnamed fields keep Temporal's defaults: second, minute and hour 0; every day and month.
    Times are in the schedule's time zone (UTC unless said otherwise)."""
    words = PRESETS.get(text.strip().lower(), text).split()
    if not words:
        raise CalendarError("an empty calendar: say e.g. 'monthly' or 'day_of_month=1 hour=6'")
    ranges: dict[str, list[ScheduleRange]] = {}
    for word in words:
        name, sep, values = word.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep or not values:
            raise CalendarError(f"{word!r}: write field=values, e.g. hour=6")
        if name not in _FIELDS:
            raise CalendarError(f"{word!r}: unknown field; fields are {', '.join(_FIELDS)}")
        if name in ranges:
            raise CalendarError(f"{name} is given twice")
        ranges[name] = [_range(name, part) for part in values.lower().split(",")]
    return ScheduleCalendarSpec(**ranges, comment=" ".join(words))


def _range(name: str, part: str) -> ScheduleRange:
    low, high = _FIELDS[name]
    match = _PART.match(part)
    if not match:
        raise CalendarError(f"{name}={part}: not a value, range (1-5) or step (*/2)")
    star, start, end, step = match.groups()
    first = low if star else _value(name, start)
    last = high if star else (_value(name, end) if end else first)
    if last < first:
        raise CalendarError(f"{name}={part}: the range ends before it starts")
    return ScheduleRange(first, last, int(step) if step else 0)


def _value(name: str, text: str) -> int:
    low, high = _FIELDS[name]
    value = _NAMES.get(name, {}).get(text[:3]) if not text.isdigit() else int(text)
    if value is None or not low <= value <= high:
        raise CalendarError(f"{name}={text}: must be {low}..{high}")
    return value


def describe_calendar(spec: ScheduleCalendarSpec) -> str:
    """A calendar spec back in the ``field=values`` form (the comment, when it has one)."""
    if spec.comment:
        return spec.comment
    parts = []
    for name in _FIELDS:
        ranges = getattr(spec, name)
        text = ",".join(
            f"{r.start}"
            + (f"-{r.end}" if r.end > r.start else "")
            + (f"/{r.step}" if r.step > 1 else "")
            for r in ranges
        )
        parts.append(f"{name}={text or '*'}")
    return " ".join(parts)


@dataclass
class Train:
    """A release train as its Schedule describes it."""

    train: str
    schedule_id: str
    calendar: str
    time_zone: str
    release_format: str
    ships_after: str | None
    paused: bool
    note: str | None
    next_fires: list[datetime] = field(default_factory=list)
    # (scheduled instant, workflow id of the ReleaseTrain run) of the latest firings
    recent: list[tuple[datetime, str]] = field(default_factory=list)

    def next_release(self) -> tuple[str, datetime] | None:
        """The release the next firing opens: its id and ship instant."""
        if not self.next_fires:
            return None
        train = TrainInput(
            train=self.train, release_format=self.release_format, ships_after=self.ships_after
        )
        return train_release(train, self.next_fires[0])


async def create_train(
    client: Client,
    train: TrainInput,
    calendar: ScheduleCalendarSpec,
    *,
    task_queue: str,
    time_zone: str = "UTC",
    note: str | None = None,
    replace: bool = False,
) -> ScheduleHandle:
    """Create the train's Schedule; ``replace`` updates an existing one instead of failing."""
    train_release(train, datetime(2026, 12, 1))  # a bad release format fails here, not monthly
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RELEASE_TRAIN_WORKFLOW,
            train,
            id=train_schedule_id(train.train),
            task_queue=task_queue,
            static_summary=f"Release train {train.train}: opens the next release",
        ),
        spec=ScheduleSpec(calendars=[calendar], time_zone_name=time_zone),
        policy=SchedulePolicy(catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(
            note=note
            or f"release train {train.train}: opens release {train.release_format} "
            f"(ships {'at once' if not train.ships_after else 'after ' + str(train.ships_after)})"
        ),
    )
    schedule_id = train_schedule_id(train.train)
    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        if not replace:
            raise TrainExists(
                f"release train {train.train} exists (schedule {schedule_id}); "
                "replace it to change its calendar"
            ) from None
    handle = client.get_schedule_handle(schedule_id)

    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    await handle.update(update)
    return handle


async def _train_of(description: ScheduleDescription, client: Client) -> Train:
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    args = list(action.args)
    # The schedule keeps its arguments as the client encoded them (encrypted, with a key set).
    data = (await client.data_converter.decode(args))[0] if args else {}
    train = TrainInput.model_validate(data)
    spec = description.schedule.spec
    state = description.schedule.state
    return Train(
        train=train.train,
        schedule_id=description.id,
        calendar="; ".join(describe_calendar(c) for c in spec.calendars) or "(none)",
        time_zone=spec.time_zone_name or "UTC",
        release_format=train.release_format,
        ships_after=str(train.ships_after) if train.ships_after else None,
        paused=state.paused,
        note=state.note,
        next_fires=list(description.info.next_action_times),
        recent=[
            (a.scheduled_at, getattr(a.action, "workflow_id", ""))
            for a in description.info.recent_actions
        ],
    )


async def describe_train(client: Client, train: str) -> Train | None:
    try:
        description = await client.get_schedule_handle(train_schedule_id(train)).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    return await _train_of(description, client)


async def list_trains(client: Client) -> list[Train]:
    """Every release train (eventually consistent, as Temporal lists schedules)."""
    trains = []
    async for listed in await client.list_schedules():
        if listed.id.startswith(TRAIN_SCHEDULE_PREFIX):
            found = await describe_train(client, listed.id.removeprefix(TRAIN_SCHEDULE_PREFIX))
            if found is not None:
                trains.append(found)
    return sorted(trains, key=lambda t: t.train)


async def fire_train(client: Client, train: str) -> None:
    """Fire the train now (Temporal's trigger): it opens the release for this instant."""
    await client.get_schedule_handle(train_schedule_id(train)).trigger()


async def delete_train(client: Client, train: str) -> None:
    await client.get_schedule_handle(train_schedule_id(train)).delete()
