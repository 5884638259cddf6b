"""Due dates for rights requests and complaints (N13).

Decisions, so that every caller computes the same instant:

* **Calendar day of receipt is the UK day.** Event times are UTC, but the
  notice is a UK notice and the ICO counts days as the UK does: a request at
  23:30 UTC on 31 March 2024 (00:30 BST on 1 April) was received on 1 April.
* **One calendar month** (UK GDPR Art. 12(3), as the ICO reads it): the same
  date in the next month; when that month has no such date (31 January ->
  February), the last day of that month. When the result is a Saturday, Sunday
  or an England & Wales bank holiday it moves to the next working day.
* **Due at the end of that UK day**: the last millisecond of the day in
  Europe/London (23:59:59.999 local), returned in UTC. Milliseconds because
  the wire format (Avro timestamp-millis) keeps no more, so the value survives
  a round trip unchanged; and ``uk_date(due)`` gives back the due date itself
  (an exclusive midnight bound would read as the following day). A request is
  overdue when ``now > due``.
* **Extension** (Art. 12(3): "two further months"): by default counted in
  calendar months from the UK date of the original due time, same month-end
  and working-day rules. When the receipt time is known, pass it: the
  extended deadline is then ``1 + months`` calendar months from the UK day of
  receipt (the Art. 12(3) total), so the first deadline's working-day roll is
  not carried into the extension (received Sat 3 Feb 2024: due Mon 4 Mar;
  extended by two months, Fri 3 May from receipt, not Tue 7 May from the due
  date) and a month-end clamp is not compounded (received 31 Jan 2024: due
  29 Feb; extended by two, 30 Apr from receipt rather than 29 Apr).
* **Complaints**: the notice promises an answer "within 30 days", after which
  the complainant can go to the ICO. That is 30 calendar days from the UK day
  of receipt, due at the end of that UK day, *without* a working-day roll (a
  roll would make the promise later than the notice says).
* Bank holidays are those of England & Wales (the company is in Southampton),
  from the maintained ``holidays`` package (``country_holidays("GB",
  subdiv="ENG")``), from 1978 (the first year with the Early May bank holiday);
  one-off proclaimed holidays arrive with its releases (pinned in constraints.txt).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import holidays
from dateutil.relativedelta import relativedelta

__all__ = [
    "COMPLAINT_DAYS",
    "DUE_SOON",
    "FIRST_RULE_YEAR",
    "UK_TZ",
    "DeadlineBucket",
    "add_calendar_months",
    "bank_holidays",
    "complaint_due",
    "deadline_bucket",
    "end_of_uk_day",
    "extend",
    "is_working_day",
    "next_working_day",
    "rights_request_due",
    "uk_date",
]

UK_TZ = ZoneInfo("Europe/London")
COMPLAINT_DAYS = 30
DUE_SOON = timedelta(days=7)
FIRST_RULE_YEAR = 1978

DeadlineBucket = Literal["overdue", "due_7d", "later"]

_FRI = 4


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def uk_date(moment: datetime) -> date:
    """The calendar day in the UK (Europe/London) at an aware instant."""
    _require_aware(moment, "moment")
    return moment.astimezone(UK_TZ).date()


def end_of_uk_day(day: date) -> datetime:
    """The last millisecond of ``day`` in the UK, in UTC."""
    local = datetime.combine(day, time(23, 59, 59, 999_000), tzinfo=UK_TZ)
    return local.astimezone(UTC)


def add_calendar_months(day: date, months: int) -> date:
    """Same date ``months`` later, or that month's last day if it has no such date."""
    return day + relativedelta(months=months)


@lru_cache(maxsize=256)
def _bank_holidays(year: int) -> tuple[tuple[date, str], ...]:
    if year < FIRST_RULE_YEAR:
        raise ValueError(f"bank holidays are taken from {FIRST_RULE_YEAR} on only")
    calendar = holidays.country_holidays("GB", subdiv="ENG", years=year, language="en_GB")
    # The package lists a holiday on its nominal date and, when that is a weekend,
    # again on the substitute ("observed") weekday; only weekdays are days off.
    return tuple(
        (day, _name(name)) for day, name in sorted(calendar.items()) if day.weekday() <= _FRI
    )


def _name(name: str) -> str:
    return name.replace("(observed)", "(substitute day)")


def bank_holidays(year: int) -> dict[date, str]:
    """England & Wales bank holidays in ``year`` (1978 on) that fall on a weekday.

    From the maintained ``holidays`` package (one-off proclaimed holidays such
    as jubilees and state funerals arrive with its releases), not a hand-kept table.
    """
    return dict(_bank_holidays(year))


def is_working_day(day: date) -> bool:
    """Monday to Friday and not an England & Wales bank holiday."""
    return day.weekday() <= _FRI and day not in bank_holidays(day.year)


def next_working_day(day: date) -> date:
    """``day`` itself when it is a working day, else the next one."""
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def _months_from(day: date, months: int) -> datetime:
    return end_of_uk_day(next_working_day(add_calendar_months(day, months)))


def rights_request_due(received: datetime) -> datetime:
    """When a rights request received at ``received`` must be answered (UTC)."""
    return _months_from(uk_date(received), 1)


def extend(due: datetime, months: int, *, received: datetime | None = None) -> datetime:
    """The due time after an extension of ``months`` (1 or 2) further months.

    Counted from the UK date of the original ``due``; or, when ``received``
    is given, as ``1 + months`` calendar months from the UK day of receipt,
    which is the stricter reading (see the module docstring).
    """
    if months not in (1, 2):
        raise ValueError("an extension is of one or two further months")
    _require_aware(due, "due")
    if received is not None:
        return _months_from(uk_date(received), 1 + months)
    return _months_from(uk_date(due), months)


def complaint_due(received: datetime) -> datetime:
    """When a complaint received at ``received`` must be answered (UTC): 30 days."""
    return end_of_uk_day(uk_date(received) + timedelta(days=COMPLAINT_DAYS))


def deadline_bucket(due: datetime, now: datetime) -> DeadlineBucket:
    """``overdue`` once ``now`` is past ``due``; ``due_7d`` within 7 days of it."""
    _require_aware(due, "due")
    _require_aware(now, "now")
    if now > due:
        return "overdue"
    if due - now <= DUE_SOON:
        return "due_7d"
    return "later"
