from datetime import UTC, datetime, timedelta

import pytest

from agents.rules.durations import Duration, DurationError


@pytest.mark.parametrize(
    ("text", "years", "months", "exact"),
    [
        ("P30D", 0, 0, timedelta(days=30)),
        ("P7Y", 7, 0, timedelta(0)),
        ("P1M", 0, 1, timedelta(0)),
        ("PT20S", 0, 0, timedelta(seconds=20)),
        ("PT0.5S", 0, 0, timedelta(milliseconds=500)),
        ("P0D", 0, 0, timedelta(0)),
        ("P2W", 0, 0, timedelta(days=14)),
        ("P1Y2M3DT4H5M6S", 1, 2, timedelta(days=3, hours=4, minutes=5, seconds=6)),
        ("PT1H", 0, 0, timedelta(hours=1)),
    ],
)
def test_parse(text: str, years: int, months: int, exact: timedelta) -> None:
    d = Duration.parse(text)
    assert (d.years, d.months, d.exact, str(d)) == (years, months, exact, text)


@pytest.mark.parametrize("text", ["", "P", "PT", "30D", "P30X", "P-1D", "P1.5D", "PT1", "P1DT"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        Duration.parse(text)


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # 29 Feb + whole years: 28 Feb in a common year, 29 Feb in a leap year.
        (datetime(2024, 2, 29, 12, tzinfo=UTC), "P7Y", datetime(2031, 2, 28, 12, tzinfo=UTC)),
        (datetime(2024, 2, 29, 12, tzinfo=UTC), "P1Y", datetime(2025, 2, 28, 12, tzinfo=UTC)),
        (datetime(2024, 2, 29, 12, tzinfo=UTC), "P4Y", datetime(2028, 2, 29, 12, tzinfo=UTC)),
        (datetime(2023, 3, 1, tzinfo=UTC), "P7Y", datetime(2030, 3, 1, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), "P1M", datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2023, 1, 31, tzinfo=UTC), "P1M", datetime(2023, 2, 28, tzinfo=UTC)),
        (datetime(2024, 3, 31, tzinfo=UTC), "P1M", datetime(2024, 4, 30, tzinfo=UTC)),
        (datetime(2024, 12, 15, tzinfo=UTC), "P1M", datetime(2025, 1, 15, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), "P1Y1M", datetime(2025, 3, 29, tzinfo=UTC)),
        (datetime(2024, 1, 1, tzinfo=UTC), "P30D", datetime(2024, 1, 31, tzinfo=UTC)),
        (datetime(2024, 1, 1, tzinfo=UTC), "PT20S", datetime(2024, 1, 1, 0, 0, 20, tzinfo=UTC)),
    ],
)
def test_after(start: datetime, duration: str, expected: datetime) -> None:
    assert Duration.parse(duration).after(start) == expected


@pytest.mark.parametrize(
    ("end", "duration", "expected"),
    [
        (datetime(2024, 3, 31, tzinfo=UTC), "P1M", datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2024, 2, 8, tzinfo=UTC), "P7D", datetime(2024, 2, 1, tzinfo=UTC)),
    ],
)
def test_before(end: datetime, duration: str, expected: datetime) -> None:
    assert Duration.parse(duration).before(end) == expected


def test_calendar_duration_has_no_fixed_length() -> None:
    assert Duration.parse("PT5M").as_timedelta() == timedelta(minutes=5)
    with pytest.raises(DurationError, match="no fixed length"):
        Duration.parse("P1M").as_timedelta()
