from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agents.clock import Clock, FakeClock, SystemClock

T0 = datetime(2024, 2, 29, 12, 0, tzinfo=UTC)


def test_system_clock_is_utc_aware() -> None:
    clock: Clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], T0),
        ([timedelta(milliseconds=1)], T0 + timedelta(milliseconds=1)),
        ([timedelta(days=30), timedelta(days=1)], T0 + timedelta(days=31)),
        ([timedelta(0)], T0),
    ],
)
def test_fake_clock_advances(steps: list[timedelta], expected: datetime) -> None:
    clock = FakeClock(T0)
    for step in steps:
        clock.advance(step)
    assert clock.now() == expected


def test_fake_clock_set_normalises_to_utc() -> None:
    clock = FakeClock(T0)
    clock.set(datetime(2031, 2, 28, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    assert clock.now() == datetime(2031, 2, 28, 12, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


@pytest.mark.parametrize(
    "use", [FakeClock, lambda naive: FakeClock(T0).set(naive)], ids=["init", "set"]
)
def test_fake_clock_refuses_naive_times(use: Callable[[datetime], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        use(datetime(2024, 1, 1))


def test_fake_clock_does_not_advance_backwards() -> None:
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))
    assert clock.now() == T0
