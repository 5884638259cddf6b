"""Due dates for rights requests and complaints (N13)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from agents.rights.deadlines import (
    add_calendar_months,
    bank_holidays,
    complaint_due,
    deadline_bucket,
    end_of_uk_day,
    extend,
    is_working_day,
    next_working_day,
    rights_request_due,
    uk_date,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, sec, us, tzinfo=UTC)


# England & Wales bank holidays as published on gov.uk/bank-holidays.
KNOWN_BANK_HOLIDAYS = {
    2020: ["01-01", "04-10", "04-13", "05-08", "05-25", "08-31", "12-25", "12-28"],
    2021: ["01-01", "04-02", "04-05", "05-03", "05-31", "08-30", "12-27", "12-28"],
    2022: [
        "01-03", "04-15", "04-18", "05-02", "06-02", "06-03",
        "08-29", "09-19", "12-26", "12-27",
    ],
    2023: ["01-02", "04-07", "04-10", "05-01", "05-08", "05-29", "08-28", "12-25", "12-26"],
    2024: ["01-01", "03-29", "04-01", "05-06", "05-27", "08-26", "12-25", "12-26"],
    2025: ["01-01", "04-18", "04-21", "05-05", "05-26", "08-25", "12-25", "12-26"],
    2026: ["01-01", "04-03", "04-06", "05-04", "05-25", "08-31", "12-25", "12-28"],
    2027: ["01-01", "03-26", "03-29", "05-03", "05-31", "08-30", "12-27", "12-28"],
}  # fmt: skip


@pytest.mark.parametrize(("year", "expected"), sorted(KNOWN_BANK_HOLIDAYS.items()))
def test_bank_holidays_match_published_list(year: int, expected: list[str]) -> None:
    assert sorted(bank_holidays(year)) == [date.fromisoformat(f"{year}-{d}") for d in expected]


@pytest.mark.parametrize(
    ("day", "is_holiday"),
    [
        (date(1995, 5, 8), True),  # VE Day 50th: Early May moved
        (date(1995, 5, 1), False),
        (date(1999, 12, 31), True),  # millennium
        (date(2000, 1, 3), True),  # New Year's Day was a Saturday
        (date(2002, 6, 3), True),  # Golden Jubilee
        (date(2002, 6, 4), True),  # Spring moved
        (date(2002, 5, 27), False),
        (date(2011, 4, 29), True),  # royal wedding
        (date(2012, 6, 4), True),  # Spring moved
        (date(2012, 6, 5), True),  # Diamond Jubilee
        (date(2012, 5, 28), False),
        (date(2020, 5, 4), False),  # Early May moved to the 8th
        (date(2022, 5, 30), False),  # Spring moved to 2 June
        (date(2023, 5, 8), True),  # coronation
    ],
)
def test_one_off_changes(day: date, is_holiday: bool) -> None:
    assert (day in bank_holidays(day.year)) is is_holiday


@pytest.mark.parametrize(
    ("day", "name_part"),
    [
        (date(2022, 1, 3), "New Year's Day (substitute day)"),  # 1 Jan a Saturday
        (date(2023, 1, 2), "New Year's Day (substitute day)"),  # 1 Jan a Sunday
        (date(2022, 12, 26), "Boxing Day"),  # Christmas a Sunday: Boxing Day on Monday
        (date(2022, 12, 27), "Christmas Day (substitute day)"),
        (date(2026, 12, 28), "Boxing Day (substitute day)"),  # Boxing Day a Saturday
        (date(2027, 12, 27), "Christmas Day (substitute day)"),  # both on the weekend
        (date(2027, 12, 28), "Boxing Day (substitute day)"),
        (date(2024, 3, 29), "Good Friday"),
        (date(2024, 4, 1), "Easter Monday"),
        (date(2022, 9, 19), "State Funeral"),
    ],
)
def test_holiday_names_and_substitute_days(day: date, name_part: str) -> None:
    assert name_part in bank_holidays(day.year)[day]


def test_years_before_the_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="1978"):
        bank_holidays(1977)


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2024, 5, 3), True),  # Friday
        (date(2024, 5, 4), False),  # Saturday
        (date(2024, 5, 5), False),  # Sunday
        (date(2024, 5, 6), False),  # Early May bank holiday
        (date(2024, 5, 7), True),
    ],
)
def test_is_working_day(day: date, working: bool) -> None:
    assert is_working_day(day) is working


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2024, 5, 3), date(2024, 5, 3)),
        (date(2024, 5, 4), date(2024, 5, 7)),
        (date(2024, 3, 29), date(2024, 4, 2)),  # Good Friday, weekend, Easter Monday
        (date(2027, 12, 25), date(2027, 12, 29)),
    ],
)
def test_next_working_day(day: date, expected: date) -> None:
    assert next_working_day(day) == expected


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2023, 1, 31), 1, date(2023, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2024, 2, 29), 1, date(2024, 3, 29)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 3, 31), 1, date(2024, 4, 30)),
        (date(2024, 12, 31), 1, date(2025, 1, 31)),
        (date(2024, 11, 30), 3, date(2025, 2, 28)),
        (date(2024, 5, 31), -3, date(2024, 2, 29)),
        (date(2024, 1, 15), -3, date(2023, 10, 15)),
    ],
)
def test_add_calendar_months(day: date, months: int, expected: date) -> None:
    assert add_calendar_months(day, months) == expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2024, 2, 29), utc(2024, 2, 29, 23, 59, 59, 999_000)),  # GMT
        (date(2024, 4, 30), utc(2024, 4, 30, 22, 59, 59, 999_000)),  # BST
        (date(2024, 3, 31), utc(2024, 3, 31, 22, 59, 59, 999_000)),  # clocks go forward
        (date(2024, 10, 27), utc(2024, 10, 27, 23, 59, 59, 999_000)),  # clocks go back
    ],
)
def test_end_of_uk_day(day: date, expected: datetime) -> None:
    assert end_of_uk_day(day) == expected
    assert uk_date(end_of_uk_day(day)) == day


@pytest.mark.parametrize(
    ("received", "due_day"),
    [
        (utc(2024, 5, 15, 10), date(2024, 6, 17)),  # Saturday 15 June -> Monday 17
        (utc(2024, 4, 10, 10), date(2024, 5, 10)),  # plain: same date next month (Friday)
        (utc(2023, 1, 31, 10), date(2023, 2, 28)),  # 31 January -> last day of February
        (utc(2024, 1, 31, 10), date(2024, 2, 29)),  # leap year
        (utc(2024, 2, 29, 10), date(2024, 4, 2)),  # 29 Mar Good Friday .. 1 Apr Easter Monday
        (utc(2023, 3, 31, 10), date(2023, 5, 2)),  # 30 Apr Sunday, 1 May bank holiday
        (utc(2024, 7, 10, 10), date(2024, 8, 12)),  # Saturday -> Monday
        (utc(2024, 2, 3, 10), date(2024, 3, 4)),  # Sunday -> Monday
        (utc(2024, 4, 6, 10), date(2024, 5, 7)),  # Early May bank holiday
        (utc(2025, 3, 18, 10), date(2025, 4, 22)),  # Good Friday, weekend, Easter Monday
        (utc(2022, 12, 1, 10), date(2023, 1, 3)),  # New Year's Day substitute (Mon 2 Jan)
        (utc(2026, 11, 28, 10), date(2026, 12, 29)),  # Boxing Day substitute (Mon 28 Dec)
        (utc(2027, 11, 25, 10), date(2027, 12, 29)),  # Christmas and Boxing Day substitutes
        (utc(2022, 5, 2, 10), date(2022, 6, 6)),  # moved Spring holiday + Platinum Jubilee
        (utc(2024, 12, 31, 10), date(2025, 1, 31)),
    ],
)
def test_rights_request_due(received: datetime, due_day: date) -> None:
    due = rights_request_due(received)
    assert due == end_of_uk_day(due_day)


@pytest.mark.parametrize(
    ("received", "due_day"),
    [
        # 23:30 UTC on 31 March 2024 is 00:30 BST on 1 April: received 1 April.
        (utc(2024, 3, 31, 23, 30), date(2024, 5, 1)),
        # 22:59 UTC on 31 March is 23:59 BST, still 31 March: 30 April.
        (utc(2024, 3, 31, 22, 59), date(2024, 4, 30)),
        # In winter UK time is UTC: 23:30 UTC on 15 January is 15 January.
        (utc(2024, 1, 15, 23, 30), date(2024, 2, 15)),
        # An offset other than UTC is read at the same instant: 03:30+05:00 on
        # 1 April is 23:30 BST on 31 March.
        (datetime(2024, 4, 1, 3, 30, tzinfo=timezone(timedelta(hours=5))), date(2024, 4, 30)),
    ],
)
def test_receipt_day_is_the_uk_day(received: datetime, due_day: date) -> None:
    assert rights_request_due(received) == end_of_uk_day(due_day)


def test_naive_receipt_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rights_request_due(datetime(2024, 1, 1, 10, 0))


@pytest.mark.parametrize(
    ("received", "months", "from_due_day", "from_receipt_day"),
    [
        # Received Sat 3 Feb 2024: due Sun 3 Mar -> Mon 4 Mar.
        (utc(2024, 2, 3, 10), 1, date(2024, 4, 4), date(2024, 4, 3)),
        # +2 from the due date: Sat 4 May, Mon 6 May bank holiday -> Tue 7 May.
        (utc(2024, 2, 3, 10), 2, date(2024, 5, 7), date(2024, 5, 3)),
        # Received 31 Jan 2024: due 29 Feb. +1: 29 Mar Good Friday -> 2 Apr either way.
        (utc(2024, 1, 31, 10), 1, date(2024, 4, 2), date(2024, 4, 2)),
        # +2: 29 Apr from the (clamped) due date; 30 Apr from receipt.
        (utc(2024, 1, 31, 10), 2, date(2024, 4, 29), date(2024, 4, 30)),
        (utc(2024, 4, 10, 10), 2, date(2024, 7, 10), date(2024, 7, 10)),
    ],
)
def test_extension(
    received: datetime, months: int, from_due_day: date, from_receipt_day: date
) -> None:
    due = rights_request_due(received)
    assert extend(due, months) == end_of_uk_day(from_due_day)
    assert extend(due, months, received=received) == end_of_uk_day(from_receipt_day)


@pytest.mark.parametrize("months", [0, 3, -1])
def test_extension_is_one_or_two_months(months: int) -> None:
    with pytest.raises(ValueError, match="one or two"):
        extend(utc(2024, 5, 10, 22, 59, 59), months)


@pytest.mark.parametrize(
    ("received", "due_day"),
    [
        (utc(2024, 1, 31, 10), date(2024, 3, 1)),  # leap February
        (utc(2023, 1, 31, 10), date(2023, 3, 2)),
        (utc(2024, 2, 1, 10), date(2024, 3, 2)),  # a Saturday: the notice's 30 days, no roll
        (utc(2024, 11, 25, 10), date(2024, 12, 25)),  # Christmas Day: no roll
        (utc(2024, 3, 31, 23, 30), date(2024, 5, 1)),  # UK day of receipt is 1 April
    ],
)
def test_complaint_due_thirty_days(received: datetime, due_day: date) -> None:
    assert complaint_due(received) == end_of_uk_day(due_day)


DUE = utc(2024, 6, 17, 22, 59, 59, 999_000)


@pytest.mark.parametrize(
    ("now", "bucket"),
    [
        (DUE + timedelta(milliseconds=1), "overdue"),
        (DUE + timedelta(days=3), "overdue"),
        (DUE, "due_7d"),
        (DUE - timedelta(days=1), "due_7d"),
        (DUE - timedelta(days=7), "due_7d"),
        (DUE - timedelta(days=7, milliseconds=1), "later"),
        (DUE - timedelta(days=30), "later"),
    ],
)
def test_deadline_bucket(now: datetime, bucket: str) -> None:
    assert deadline_bucket(DUE, now) == bucket


def test_deadline_bucket_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        deadline_bucket(DUE, datetime(2024, 6, 1, 12, 0))
