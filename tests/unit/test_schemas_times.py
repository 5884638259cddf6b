"""Times in every model are UTC, to the millisecond, as they travel in Avro."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.base import UtcDatetime

TIME = TypeAdapter(UtcDatetime)
PARIS_SUMMER = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (datetime(2026, 6, 1, 12, 0, 0, 123000, UTC), datetime(2026, 6, 1, 12, 0, 0, 123000, UTC)),
        (datetime(2026, 6, 1, 12, 0, 0, 123456, UTC), datetime(2026, 6, 1, 12, 0, 0, 123000, UTC)),
        (datetime(2026, 6, 1, 14, 0, tzinfo=PARIS_SUMMER), datetime(2026, 6, 1, 12, 0, tzinfo=UTC)),
        (
            datetime(2026, 6, 1, 14, 0, 0, 999999, PARIS_SUMMER),
            datetime(2026, 6, 1, 12, 0, 0, 999000, UTC),
        ),
    ],
)
def test_times_become_utc_milliseconds(given: datetime, expected: datetime) -> None:
    value = TIME.validate_python(given)
    assert value == expected
    assert value.tzinfo is UTC
    assert value.microsecond == expected.microsecond


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        TIME.validate_python(datetime(2026, 6, 1, 12, 0))
