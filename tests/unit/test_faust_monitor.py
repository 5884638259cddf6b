"""The caching Faust monitor exposes exactly what Faust's own Prometheus monitor does."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from agents.runtime.faust_monitor import CachingPrometheusMonitor


class Owner:
    """A stream's task owner (Faust keeps weak references to it)."""


class FakeStream:
    """What the monitor reads of a stream (hashable, as Faust's streams are)."""

    shortlabel = "Stream: lifecycle.in.telephony"
    task_owner = Owner()


STREAM = FakeStream()
INPUT = TP("t.in.telephony", 0)
CHANGELOG = TP("t-subjects-changelog", 3)


def traffic(monitor: Any, offsets: range) -> None:
    for offset in offsets:
        for tp in (INPUT, CHANGELOG):
            monitor.track_tp_end_offset(tp, offset + 10)
            monitor.on_message_in(tp, offset, SimpleNamespace())
        monitor.on_stream_event_in(INPUT, offset, STREAM, SimpleNamespace())
        monitor.on_send_initiated(None, "t.cmd.crm", None, 4, 100)


def faust_lines(monitor_type: type[PrometheusMonitor]) -> list[str]:
    registry = CollectorRegistry()
    monitor = monitor_type(metrics=FaustMetrics.create(registry, "faust"))
    traffic(monitor, range(0, 5))
    # A rebalance clears the per-partition metrics: what follows must show again.
    monitor._clear_partition_related_metrics()
    traffic(monitor, range(5, 8))
    text = generate_latest(registry).decode()
    # Latency histograms depend on the wall clock; everything else must match.
    return sorted(
        line
        for line in text.splitlines()
        if line.startswith("faust_") and not re.search(r"latency|_created", line)
    )


def test_the_caching_monitor_matches_faust_after_a_rebalance() -> None:
    expected = faust_lines(PrometheusMonitor)
    assert any('partition="3"' in line and line.endswith(" 17.0") for line in expected)
    assert faust_lines(CachingPrometheusMonitor) == expected
