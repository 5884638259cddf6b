"""The due index: pops only what is due, never early, and survives supersession."""

from __future__ import annotations

import pytest

from agents.scheduler import RECHECK_AFTER_MS, DueIndex, Schedule, ScheduleEntry


def test_pops_only_items_due_at_or_before_now() -> None:
    index = DueIndex()
    index.set("a", 100)
    index.set("b", 200)
    index.set("c", 300)
    assert index.pop_due(199) == [("a", 100)]
    assert index.pop_due(200) == [("b", 200)]
    assert index.pop_due(299) == []


def test_one_ms_before_due_fires_nothing() -> None:
    index = DueIndex()
    index.set("a", 1_000)
    assert index.pop_due(999) == []
    assert index.pop_due(1_000) == [("a", 1_000)]


def test_superseded_due_time_is_not_fired() -> None:
    index = DueIndex()
    index.set("a", 100)
    index.set("a", 500)  # a decision moved it later
    assert index.pop_due(400) == []
    assert index.pop_due(500) == [("a", 500)]


def test_forgotten_subject_is_not_fired() -> None:
    index = DueIndex()
    index.set("a", 100)
    index.set("a", None)
    assert index.pop_due(1_000) == []
    assert len(index) == 0


def test_popped_subject_is_rearmed_in_case_its_tick_is_lost() -> None:
    index = DueIndex()
    index.set("a", 100)
    assert index.pop_due(150) == [("a", 100)]
    assert index.pop_due(150 + RECHECK_AFTER_MS - 1) == []
    assert index.pop_due(150 + RECHECK_AFTER_MS) == [("a", 150 + RECHECK_AFTER_MS)]


def test_limit_bounds_one_tick_and_the_rest_waits() -> None:
    index = DueIndex()
    for i in range(10):
        index.set(f"s{i}", i)
    first = index.pop_due(100, limit=4)
    assert [s for s, _ in first] == ["s0", "s1", "s2", "s3"]
    rest = index.pop_due(100)
    assert len(rest) == 6


def test_rebuild_replaces_everything() -> None:
    index = DueIndex()
    index.set("old", 1)
    index.rebuild([("x", 10), ("y", 5)])
    assert index.pop_due(100) == [("y", 5), ("x", 10)]


def test_compaction_keeps_behaviour_after_many_updates() -> None:
    index = DueIndex()
    for n in range(10_000):
        index.set("a", 1_000_000 - n)
    assert index.pop_due(999_999 - 10_000) == []
    assert index.pop_due(1_000_000) == [("a", 1_000_000 - 9_999)]


@pytest.mark.parametrize(
    "entry",
    [
        ScheduleEntry(due_ms=None),
        ScheduleEntry(due_ms=5, requests=(("access", 10),), outstanding=(("crm", 3),)),
    ],
)
def test_schedule_entry_round_trips(entry: ScheduleEntry) -> None:
    assert ScheduleEntry.from_bytes(entry.to_bytes()) == entry


def test_schedule_tracks_open_work_for_metrics() -> None:
    schedule = Schedule()
    schedule.update("a", ScheduleEntry(due_ms=5, requests=(("access", 10),)))
    schedule.update("b", ScheduleEntry(due_ms=7))
    assert set(schedule.open_work) == {"a"}
    schedule.update("a", None)
    assert schedule.open_work == {}
    assert schedule.index.pop_due(10) == [("b", 7)]
