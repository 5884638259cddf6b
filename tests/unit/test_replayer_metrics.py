"""The erasure replayer's metrics, against a fresh registry."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agents.runtime.replayer import ReplayReport
from agents.runtime.replayer_metrics import ReplayerMetrics

SINCE = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def report(system: str, entries: int, records: int, unreadable: int = 0) -> ReplayReport:
    return ReplayReport(system, SINCE, "restore-1", entries, records, 1, unreadable)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_replays_are_counted_by_system(registry: CollectorRegistry) -> None:
    metrics = ReplayerMetrics.create(registry)
    metrics.observe_replay(report("crm", 3, 700), finished_at=1_800_000_000.0)
    metrics.observe_replay(report("crm", 1, 2, unreadable=1), finished_at=1_800_000_060.0)
    metrics.observe_replay(report("billing-db", 0, 0), finished_at=1_800_000_120.0)
    metrics.observe_unreadable()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("lifecycle_replayer_restores_total", system="crm") == 2
    assert value("lifecycle_replayer_restores_total", system="billing-db") == 1
    assert value("lifecycle_replayer_deletions_resent_total", system="crm") == 4
    assert value("lifecycle_replayer_records_resent_total", system="crm") == 702
    assert value("lifecycle_replayer_unreadable_total") == 2
    assert value("lifecycle_replayer_last_restore_timestamp_seconds") == 1_800_000_120.0


def test_labels_name_systems_only(registry: CollectorRegistry) -> None:
    ReplayerMetrics.create(registry).observe_replay(report("crm", 1, 1), finished_at=0.0)
    labels = set(re.findall(r"(\w+)=\"", generate_latest(registry).decode()))
    assert labels == {"system"}
