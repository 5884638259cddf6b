"""Waking due subjects from the on-disk timer index: only what is due, never early,
a lost tick sent again, a backlog bounded per round, nothing rebuilt."""

from __future__ import annotations

import json

from agents.runtime.scheduler import (
    RECHECK_AFTER_MS,
    TimerCount,
    Waker,
    legacy_subjects,
    open_requests,
    outstanding_commands,
)
from agents.store import keys
from agents.store.memory import MemoryPartition


def _timers(*items: tuple[str, int]) -> MemoryPartition:
    entries = MemoryPartition()
    entries.apply([(keys.timer(ms, subject), b"") for subject, ms in items])
    return entries


def test_wakes_only_subjects_due_at_or_before_now() -> None:
    entries = _timers(("a", 100), ("b", 200), ("c", 300))
    waker = Waker()
    assert waker.due(entries, 199) == [("a", 100)]
    assert waker.due(entries, 200) == [("b", 200)]
    assert Waker().due(entries, 299) == [("a", 100), ("b", 200)]


def test_one_ms_before_due_wakes_nothing() -> None:
    entries = _timers(("a", 1_000))
    assert Waker().due(entries, 999) == []
    assert Waker().due(entries, 1_000) == [("a", 1_000)]


def test_a_moved_timer_entry_is_not_woken_at_its_old_time() -> None:
    entries = _timers(("a", 100))
    # A decision moved it later: the old key is deleted, the new one written.
    entries.apply([(keys.timer(100, "a"), None), (keys.timer(500, "a"), b"")])
    assert Waker().due(entries, 400) == []
    assert Waker().due(entries, 500) == [("a", 500)]


def test_a_ticked_subject_is_ticked_again_if_its_entry_stays_due() -> None:
    entries = _timers(("a", 100))
    waker = Waker()
    assert waker.due(entries, 150) == [("a", 100)]
    assert waker.due(entries, 150 + RECHECK_AFTER_MS - 1) == []  # its tick is on its way
    assert waker.due(entries, 150 + RECHECK_AFTER_MS) == [("a", 100)]  # it was lost


def test_an_entry_moved_by_a_decision_is_ticked_when_its_new_time_comes() -> None:
    # Two recordings of one subject due 2 s apart: the tick for the first is decided
    # (its DELETE sent, the entry moved to the second's due time); the second must not
    # wait for the recheck of a lost tick.
    entries = _timers(("a", 1_000))
    waker = Waker()
    assert waker.due(entries, 1_000) == [("a", 1_000)]
    entries.apply([(keys.timer(1_000, "a"), None), (keys.timer(3_000, "a"), b"")])
    assert waker.due(entries, 2_999) == []
    assert waker.due(entries, 3_000) == [("a", 3_000)]
    assert waker.due(entries, 3_001) == []  # and once only


def test_limit_bounds_one_round_and_the_rest_waits() -> None:
    entries = _timers(*[(f"s{i}", i) for i in range(10)])
    waker = Waker()
    assert [s for s, _ in waker.due(entries, 100, limit=4)] == ["s0", "s1", "s2", "s3"]
    assert len(waker.due(entries, 100)) == 6


def test_a_new_waker_reads_the_same_entries_nothing_is_rebuilt() -> None:
    # After a rebalance or restart the first scan finds what is due on disk.
    entries = _timers(("x", 10), ("y", 5))
    assert Waker().due(entries, 100) == [("y", 5), ("x", 10)]


def test_legacy_subjects_are_found_among_namespaced_keys() -> None:
    entries = MemoryPartition()
    entries.apply(
        [
            (b"h", b"{}"),  # a subject called "h" in the previous format
            (keys.header("a"), b"{}"),
            (keys.header("h1"), b"{}"),
            (b"hello", b"{}"),
            (keys.timer(5, "a"), b""),
            (b"cust-1", b"{}"),
            (b"__faust\x00offset__", b"7"),
        ]
    )
    assert legacy_subjects(entries, 100) == ["cust-1", "h", "hello"]
    assert legacy_subjects(entries, 2) == ["cust-1", "h"]
    assert legacy_subjects(_timers(("a", 1)), 100) == []


def test_open_work_for_the_gauges() -> None:
    entries = MemoryPartition()
    entries.apply(
        [
            (keys.keyed(keys.OPEN_REQUEST, "a", "r-1"), json.dumps(["access", 10]).encode()),
            (keys.keyed(keys.OUTSTANDING, "a", "cmd-1"), b"crm|3"),
        ]
    )
    assert list(open_requests(entries)) == [("access", 10)]
    assert list(outstanding_commands(entries)) == [("crm", 3)]


def test_timer_count_reads_a_slice_per_call() -> None:
    entries = _timers(*[(f"s{i}", i) for i in range(10)])
    count = TimerCount(per_call=4)
    count.step(0, entries)
    count.step(0, entries)
    assert count.total == 0  # the pass is not complete yet
    count.step(0, entries)
    assert count.total == 10
    count.keep_only([])
    assert count.total == 0
