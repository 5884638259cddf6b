"""ISO-8601 durations (``P30D``, ``P7Y``, ``PT20S``) and calendar arithmetic.

Supported form: ``P[nY][nM][nW][nD][T[nH][nM][n[.fff]S]]`` with non-negative
integers (seconds may carry up to three decimals). Negative, fractional
non-second and combined-week forms beyond that are rejected.

Adding a duration to a time is done in two steps, without dateutil:

1. Calendar part (years and months): the year and month are advanced and the
   day of month is kept; when that day does not exist in the target month it
   is clamped to the month's last day. So 29 February + 1 year is 28 February
   (the "Feb 29 -> Feb 28" rule), 29 February + 4 years is 29 February, and
   31 March + 1 month is 30 April. The time of day is kept.
2. Exact part (weeks, days, hours, minutes, seconds) is added as a timedelta,
   i.e. in UTC elapsed time.

Years and months are added together (P1Y1M from 29 Feb 2024 is 29 Mar 2025),
not one after the other, so clamping happens at most once.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_PATTERN = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d{1,3})?)S)?)?$"
)


class DurationError(ValueError):
    pass


@dataclass(frozen=True)
class Duration:
    """A non-negative ISO-8601 duration: a calendar part and an exact part."""

    years: int = 0
    months: int = 0
    exact: timedelta = timedelta(0)
    text: str = "PT0S"

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise DurationError(
                f"invalid duration {text!r}: expected ISO-8601 such as P30D, P7Y, P1M, PT20S"
            )
        g = {k: v for k, v in match.groupdict().items() if v is not None}
        exact = timedelta(
            weeks=int(g.get("weeks", 0)),
            days=int(g.get("days", 0)),
            hours=int(g.get("hours", 0)),
            minutes=int(g.get("minutes", 0)),
            seconds=float(g.get("seconds", 0)),
        )
        return cls(int(g.get("years", 0)), int(g.get("months", 0)), exact, text.strip())

    @property
    def is_calendar(self) -> bool:
        """True when the length depends on the start date (years or months)."""
        return bool(self.years or self.months)

    def as_timedelta(self) -> timedelta:
        """The exact length; only for durations without years or months."""
        if self.is_calendar:
            raise DurationError(f"duration {self.text} has years/months and no fixed length")
        return self.exact

    def after(self, start: datetime) -> datetime:
        """``start`` + this duration, with the calendar rules in the module docstring."""
        return add_months(start, self.years * 12 + self.months) + self.exact

    def before(self, end: datetime) -> datetime:
        """``end`` - this duration (calendar part clamped the same way)."""
        return add_months(end, -(self.years * 12 + self.months)) - self.exact

    def __str__(self) -> str:
        return self.text

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def _coerce(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise DurationError(f"invalid duration {value!r}: expected a string such as P30D")
    return Duration.parse(value)


def add_months(start: datetime, months: int) -> datetime:
    """Same day next ``months`` months, clamped to the month's end (29 Feb -> 28 Feb)."""
    if months == 0:
        return start
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def add_years(start: datetime, years: int) -> datetime:
    """Same date ``years`` later; 29 February becomes 28 February in a common year."""
    return add_months(start, years * 12)
