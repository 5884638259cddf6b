"""The standing reconciliation finds what the timer missed, heals it, and says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.rules.context import to_ms
from agents.rules.state import RecordStatus
from agents.rules.testing import Harness
from agents.runtime.reconcile import (
    Finding,
    ReconcileMetrics,
    Reconciler,
    RecordSweep,
    record_overdue,
    timers_overdue,
)
from agents.store import keys
from agents.store.memory import MemoryPartition
from schemas.commands import Action
from schemas.events import CallRecorded, LegalHoldPlaced
from schemas.internal import DueTick
from tests.unit.builders import NOTICE

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
RECORDING_RULE = "N7.call-recordings"
BOUND = timedelta(seconds=90)


def _recording(h: Harness, rec: str) -> None:
    h.send(
        h.event(CallRecorded, recording_id=rec, system="call-recorder", source_system="telephony")
    )


def _lose_the_timer(h: Harness) -> None:
    """What a lost hand-over leaves: the record, but no due-index or timer entry."""
    lost = [
        k
        for k in list(h.entries.data)
        if k.startswith(keys.subject_prefix(keys.DUE, h.subject_id)) or k[:1] == keys.TIMER
    ]
    assert lost, "the recording had due entries to lose"
    h.entries.apply([(k, None) for k in lost])


def _gauge(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    assert value is not None, name
    return value


def test_a_record_whose_timer_was_lost_is_found_healed_and_the_metric_returns_to_zero() -> None:
    h = Harness(NOTICE, T0)
    _recording(h, "rec-1")
    _lose_the_timer(h)
    h.clock.set(T0 + timedelta(days=30) + BOUND + timedelta(seconds=1))
    assert h.tick().commands == [], "without its due entry a plain tick deletes nothing"

    registry = CollectorRegistry()
    metrics = ReconcileMetrics.create(registry)
    metrics.declare([RECORDING_RULE])
    reconciler = Reconciler(bound_ms=int(BOUND.total_seconds() * 1000))
    now_ms = to_ms(h.clock.now())

    found = reconciler.round({0: h.entries}, now_ms)
    metrics.publish(found, now_ms)
    assert found.to_tick == {h.subject_id: ["call-recorder/rec-1"]}
    assert _gauge(registry, "lifecycle_records_overdue", rule=RECORDING_RULE) == 1
    oldest = _gauge(registry, "lifecycle_records_overdue_oldest_seconds", rule=RECORDING_RULE)
    assert oldest == pytest.approx(BOUND.total_seconds() + 1)

    now = h.clock.now()
    healed = h.send(
        DueTick(
            subject_id=h.subject_id,
            due_at=now,
            sent_at=now,
            records=found.to_tick["cust-1"],
            reconciliation=True,
        )
    )
    [delete] = healed.commands
    assert (delete.action, delete.record_ids) == (Action.DELETE, ["rec-1"])
    decisions = [a.decision for a in healed.audit]
    assert decisions[:3] == ["overdue-found", "due-index-restored", "retention-delete"]
    assert healed.audit[0].rule_id == "reconciliation"
    assert healed.audit[0].details["record-ids"] == "rec-1"

    again = reconciler.round({0: h.entries}, now_ms)
    metrics.publish(again, now_ms)
    assert again.to_tick == {}
    assert _gauge(registry, "lifecycle_records_overdue", rule=RECORDING_RULE) == 0
    assert _gauge(registry, "lifecycle_records_overdue_oldest_seconds", rule=RECORDING_RULE) == 0


def _reconciliation_tick(h: Harness, *records: str) -> DueTick:
    now = h.clock.now()
    return DueTick(
        subject_id=h.subject_id, due_at=now, sent_at=now, records=list(records), reconciliation=True
    )


def test_a_reconciliation_tick_for_a_record_with_its_entry_restores_nothing() -> None:
    h = Harness(NOTICE, T0)
    _recording(h, "rec-1")
    h.clock.set(T0 + timedelta(days=31))
    step = h.send(_reconciliation_tick(h, "call-recorder/rec-1"))
    assert [c.action for c in step.commands] == [Action.DELETE]
    decisions = [a.decision for a in step.audit]
    assert "overdue-found" in decisions
    assert "due-index-restored" not in decisions


def test_a_tick_naming_a_record_not_yet_due_does_not_delete_it_early() -> None:
    h = Harness(NOTICE, T0)
    _recording(h, "rec-1")
    _lose_the_timer(h)
    h.clock.set(T0 + timedelta(days=29))
    step = h.send(_reconciliation_tick(h, "call-recorder/rec-1"))
    assert step.commands == []
    assert "overdue-found" not in [a.decision for a in step.audit]


@pytest.mark.parametrize(
    ("after_due", "overdue"),
    [
        (timedelta(seconds=0), False),
        (BOUND, False),  # exactly the bound: not yet
        (BOUND + timedelta(milliseconds=1), True),
        (timedelta(days=3), True),
    ],
)
def test_overdue_means_due_more_than_the_bound_ago(after_due: timedelta, overdue: bool) -> None:
    h = Harness(NOTICE, T0)
    _recording(h, "rec-1")
    h.clock.set(T0 + timedelta(days=30) + after_due)
    found = Reconciler(bound_ms=int(BOUND.total_seconds() * 1000)).round(
        {0: h.entries}, to_ms(h.clock.now())
    )
    assert (RECORDING_RULE in found.records) is overdue


def _stored(h: Harness, rec: str) -> bytes:
    raw = h.entries.get(keys.keyed(keys.RECORD, h.subject_id, f"call-recorder/{rec}"))
    assert raw is not None
    return raw


def test_a_record_with_a_reason_on_record_is_not_overdue() -> None:
    late = to_ms(T0 + timedelta(days=40))
    h = Harness(NOTICE, T0)
    _recording(h, "held")
    _recording(h, "deleting")
    h.send(
        h.event(
            LegalHoldPlaced,
            hold_id="hold-1",
            case_reference="case-9",
            reason="litigation",
            record_ids=["held"],
        )
    )
    h.clock.set(T0 + timedelta(days=30, seconds=1))
    h.tick()  # the hold keeps "held"; "deleting" gets its DELETE
    assert h.state is not None
    statuses = {r.record_id: (r.status, r.held_by) for r in h.state.records.values()}
    assert statuses == {
        "held": (RecordStatus.HELD, ["hold-1"]),
        "deleting": (RecordStatus.DELETING, []),
    }
    assert record_overdue(_stored(h, "held"), late) is None
    assert record_overdue(_stored(h, "deleting"), late) is None


def test_the_sweep_visits_every_record_a_budget_at_a_time_and_reports_full_passes() -> None:
    h = Harness(NOTICE, T0)
    for n in range(7):
        _recording(h, f"rec-{n}")
    _lose_the_timer(h)
    deadline = to_ms(T0 + timedelta(days=31))
    sweep = RecordSweep()
    found: list[str] = []
    reads = []
    while True:
        hits, read = sweep.step(0, h.entries, deadline, budget=3)
        found += [r.record_key for r in hits]
        reads.append(read)
        if 0 not in sweep._cursor:
            break
    assert reads == [3, 3, 1]
    assert sorted(found) == [f"call-recorder/rec-{n}" for n in range(7)]
    assert sweep.passes[0][RECORDING_RULE].count == 7


def test_one_round_reads_at_most_its_budget_over_all_partitions() -> None:
    partitions: dict[int, Any] = {}
    for p in range(3):
        h = Harness(NOTICE, T0, subject_id=f"cust-{p}")
        for n in range(10):
            _recording(h, f"rec-{n}")
        partitions[p] = h.entries
    reconciler = Reconciler(sweep=RecordSweep(per_round=12))
    found = reconciler.round(partitions, to_ms(T0 + timedelta(days=40)))
    assert found.keys_read == 12
    assert found.records == {}  # no partition has finished a pass yet


def test_unreadable_values_are_counted_not_raised() -> None:
    part = MemoryPartition()
    part.apply(
        [(keys.keyed(keys.RECORD, "cust-1", "crm/r1"), b'{"status":"held","due_at":"not-a-time"')]
    )
    sweep = RecordSweep()
    sweep.step(0, part, 10**15, budget=10)
    assert sweep.unreadable == {0: 1}


def test_overdue_timers_are_read_only_up_to_the_deadline() -> None:
    part = MemoryPartition()
    part.apply(
        [(keys.timer(ms, f"cust-{ms}"), b"") for ms in (1_000, 2_000, 50_000)]
        + [(keys.keyed(keys.RECORD, "cust-1", "crm/r1"), b"{}")]
    )
    found = timers_overdue(part, deadline_ms=10_000)
    assert (found.count, found.oldest_due_ms) == (2, 1_000)
    assert timers_overdue(part, deadline_ms=500) == Finding()
