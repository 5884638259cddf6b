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
  computed by rule from 1978 (the first year with the Early May bank holiday)
  plus a table of one-off changes proclaimed since then.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

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
    "easter_sunday",
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

_MON, _FRI, _SAT, _SUN = 0, 4, 5, 6

# One-off changes to the England & Wales bank holidays, by royal proclamation.
# ``moved``: a rule-computed holiday that did not happen on its usual day,
# mapped to the day it happened instead. ``extra``: additional holidays.
_MOVED: dict[date, date] = {
    date(1995, 5, 1): date(1995, 5, 8),  # Early May -> VE Day 50th anniversary
    date(2002, 5, 27): date(2002, 6, 4),  # Spring -> Golden Jubilee weekend
    date(2012, 5, 28): date(2012, 6, 4),  # Spring -> Diamond Jubilee weekend
    date(2020, 5, 4): date(2020, 5, 8),  # Early May -> VE Day 75th anniversary
    date(2022, 5, 30): date(2022, 6, 2),  # Spring -> Platinum Jubilee weekend
}
_EXTRA: dict[date, str] = {
    date(1981, 7, 29): "Royal wedding",
    date(1999, 12, 31): "Millennium celebrations",
    date(2002, 6, 3): "Golden Jubilee",
    date(2011, 4, 29): "Royal wedding",
    date(2012, 6, 5): "Diamond Jubilee",
    date(2022, 6, 3): "Platinum Jubilee",
    date(2022, 9, 19): "State funeral of Queen Elizabeth II",
    date(2023, 5, 8): "Coronation of King Charles III",
}


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
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def easter_sunday(year: int) -> date:
    """Western (Gregorian) Easter Sunday: the anonymous Gregorian computus."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _first_monday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(_MON - first.weekday()) % 7)


def _last_monday(year: int, month: int) -> date:
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - _MON) % 7)


def _with_substitutes(days: list[tuple[date, str]]) -> dict[date, str]:
    """Holidays falling on a weekend move to the next weekday not already taken."""
    taken: dict[date, str] = {}
    for day, name in days:
        if day.weekday() < _SAT and day not in taken:
            taken[day] = name
    for day, name in days:
        if day.weekday() >= _SAT:
            sub = day
            while sub.weekday() >= _SAT or sub in taken:
                sub += timedelta(days=1)
            taken[sub] = f"{name} (substitute day)"
    return taken


@lru_cache(maxsize=256)
def _bank_holidays(year: int) -> tuple[tuple[date, str], ...]:
    if year < FIRST_RULE_YEAR:
        raise ValueError(f"bank holidays are computed by rule from {FIRST_RULE_YEAR} only")
    easter = easter_sunday(year)
    holidays: dict[date, str] = {}
    holidays.update(_with_substitutes([(date(year, 1, 1), "New Year's Day")]))
    holidays[easter - timedelta(days=2)] = "Good Friday"
    holidays[easter + timedelta(days=1)] = "Easter Monday"
    holidays[_first_monday(year, 5)] = "Early May bank holiday"
    holidays[_last_monday(year, 5)] = "Spring bank holiday"
    holidays[_last_monday(year, 8)] = "Summer bank holiday"
    holidays.update(
        _with_substitutes(
            [(date(year, 12, 25), "Christmas Day"), (date(year, 12, 26), "Boxing Day")]
        )
    )
    for usual, moved_to in _MOVED.items():
        if usual.year == year:
            holidays[moved_to] = holidays.pop(usual)
    holidays.update({day: name for day, name in _EXTRA.items() if day.year == year})
    return tuple(sorted(holidays.items()))


def bank_holidays(year: int) -> dict[date, str]:
    """England & Wales bank holidays in ``year`` (1978 on), date -> name."""
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
