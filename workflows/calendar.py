"""Calendar arithmetic for deadlines: spans like ``14d`` or ``3mo``, months clamped at month end.

Pure and Temporal-free: the lifecycle core and the policy model both read it.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_UNITS = {
    "s": timedelta(seconds=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_SPAN = re.compile(r"^\s*(\d{1,6})\s*(s|min|h|d|w|mo)\s*$")


_WORDS = {"s": "second", "min": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month"}
_AVERAGE_MONTH = timedelta(days=365.2425 / 12)


class SpanError(ValueError):
    pass


def add_months(instant: datetime, months: int) -> datetime:
    """Same wall-clock time ``months`` calendar months later; a missing day clamps to month end."""
    index = instant.month - 1 + months
    year, month = instant.year + index // 12, index % 12 + 1
    day = min(instant.day, calendar.monthrange(year, month)[1])
    return instant.replace(year=year, month=month, day=day)


class Span:
    """A length of calendar time: a fixed duration, or a number of calendar months.

    Written ``<n><unit>`` with unit ``s``, ``min``, ``h``, ``d``, ``w`` or ``mo`` (months), so a
    policy reads like the guide ("14d", "24mo") and a demo policy like "2min".
    """

    __slots__ = ("count", "unit")

    def __init__(self, count: int, unit: str) -> None:
        if unit not in _UNITS and unit != "mo":
            raise SpanError(f"unknown unit {unit!r}")
        if count <= 0:
            raise SpanError("a span must be longer than zero")
        self.count, self.unit = count, unit

    @classmethod
    def parse(cls, text: str) -> Span:
        match = _SPAN.match(text) if isinstance(text, str) else None
        if not match:
            raise SpanError(
                f"{text!r} is not a span: write <number><unit>, unit one of s, min, h, d, w, mo "
                "(e.g. '14d', '3mo', '2min')"
            )
        return cls(int(match[1]), match[2])

    def after(self, instant: datetime, times: int = 1) -> datetime:
        """The instant ``times`` spans after ``instant``, each counted from ``instant`` itself
        (so quarterly reviews from Jan 31 fall on Apr 30, Jul 31, Oct 31)."""
        if self.unit == "mo":
            return add_months(instant, self.count * times)
        return instant + _UNITS[self.unit] * (self.count * times)

    def times_within(self, start: datetime, end: datetime) -> int:
        """How many spans counted from ``start`` end by ``end`` (the largest n with
        ``after(start, n) <= end``)."""
        if end < start:
            return 0
        if self.unit == "mo":
            n = ((end.year - start.year) * 12 + end.month - start.month) // self.count
        else:
            n = (end - start) // (_UNITS[self.unit] * self.count)
        while n > 0 and self.after(start, n) > end:
            n -= 1
        while self.after(start, n + 1) <= end:
            n += 1
        return n

    def length(self) -> timedelta:
        """Its length; a month counts as the Gregorian average (for bounds, never for dates)."""
        if self.unit == "mo":
            return _AVERAGE_MONTH * self.count
        return _UNITS[self.unit] * self.count

    def at_most(self, other: Span) -> bool:
        if self.unit == other.unit:
            return self.count <= other.count
        return self.length() <= other.length()

    def words(self) -> str:
        """How a message says it: "14 days", "3 months", "1 minute"."""
        noun = _WORDS[self.unit]
        return f"{self.count} {noun}" if self.count == 1 else f"{self.count} {noun}s"

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    def __repr__(self) -> str:
        return f"Span({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Span) and (self.count, self.unit) == (other.count, other.unit)

    def __hash__(self) -> int:
        return hash((self.count, self.unit))


def _to_span(value: object) -> Span:
    if isinstance(value, Span):
        return value
    if isinstance(value, str):
        try:
            return Span.parse(value)
        except SpanError as err:
            raise ValueError(str(err)) from None
    raise ValueError("a span is a string such as '14d' or '3mo'")


SpanField = Annotated[
    Span,
    PlainValidator(_to_span),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _SPAN.pattern}),
]


# Every deadline of a policy lies within these bounds (SPEC "Deadlines"), so no instant a policy
# makes can leave the calendar; a worker may lower the shortest for tests and demos.
SHORTEST_SPAN = Span(1, "min")
LONGEST_SPAN = Span(120, "mo")
