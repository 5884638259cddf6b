"""The metrics bundle: names, types, labels, conventions and helper behaviour."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agents.runtime.metrics import (
    ALLOWED_LABELS,
    METRIC_NAMES,
    REQUEST_DEADLINE_BUCKETS,
    LifecycleMetrics,
    deadline_bucket,
    install_faust_sensors,
    outstanding_age_bucket,
)

REPO = Path(__file__).resolve().parents[2]

# name -> (type, label names)
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "lifecycle_worker_info": ("gauge", {"version", "policy_version"}),
    "lifecycle_events_consumed_total": ("counter", {"topic", "event_type"}),
    "lifecycle_dead_letters_total": ("counter", {"topic", "reason_class"}),
    "lifecycle_decisions_total": ("counter", {"rule_id", "decision"}),
    "lifecycle_commands_emitted_total": ("counter", {"system", "action", "rule_id"}),
    "lifecycle_commands_acknowledged_total": ("counter", {"system", "action", "outcome"}),
    "lifecycle_commands_failed_total": ("counter", {"system", "action"}),
    "lifecycle_commands_resent_total": ("counter", {"system", "action"}),
    "lifecycle_commands_escalated_total": ("counter", {"system", "action"}),
    "lifecycle_processing_without_consent_total": ("counter", {"system", "purpose"}),
    "lifecycle_late_records_total": ("counter", {"system", "request_type"}),
    "lifecycle_command_ack_latency_seconds": ("histogram", {"system"}),
    "lifecycle_commands_outstanding": ("gauge", {"system", "bucket"}),
    "lifecycle_command_oldest_outstanding_age_seconds": ("gauge", {"system"}),
    "lifecycle_command_ack_bound_seconds": ("gauge", {"system"}),
    "lifecycle_timers_scheduled": ("gauge", set()),
    "lifecycle_timer_lag_seconds": ("histogram", set()),
    "lifecycle_requests_received_total": ("counter", {"request_type"}),
    "lifecycle_requests_closed_total": ("counter", {"request_type", "outcome"}),
    "lifecycle_requests_open": ("gauge", {"request_type", "bucket"}),
    "lifecycle_audit_events_written_total": ("counter", {"event_type"}),
    "lifecycle_audit_write_errors_total": ("counter", {"operation", "outcome"}),
    "lifecycle_consumer_lag": ("gauge", {"topic", "partition"}),
    "lifecycle_items_parked_total": ("counter", {"topic", "failure_class"}),
    "lifecycle_transient_retries_total": ("counter", {"step"}),
}

FORBIDDEN_LABEL_PARTS = {
    "subject",
    "email",
    "mail",
    "name",
    "ip",
    "phone",
    "address",
    "user",
    "customer",
    "person",
    "msisdn",
    "number",
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> LifecycleMetrics:
    return LifecycleMetrics.create(registry, version="1.2.3", policy_version="notice-2024.1")


def exposed_types(registry: CollectorRegistry) -> dict[str, str]:
    """``# TYPE`` lines of a scrape, without prometheus_client's ``_created`` gauges."""
    text = generate_latest(registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    return {n: t for n, t in types.items() if not n.endswith("_created")}


def label_names(metric: Counter | Gauge | Histogram) -> set[str]:
    return set(metric._labelnames)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_every_metric_is_exported_with_its_type(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    assert exposed_types(registry) == {n: t for n, (t, _) in EXPECTED.items()}
    assert set(METRIC_NAMES) == set(EXPECTED)


def test_every_metric_has_its_labels(metrics: LifecycleMetrics) -> None:
    by_name = {}
    for f in fields(metrics):
        value = getattr(metrics, f.name)
        if isinstance(value, Counter):
            by_name[value._name + "_total"] = value
        elif isinstance(value, Gauge | Histogram):
            by_name[value._name] = value
    assert set(by_name) == set(EXPECTED)
    for name, (_, labels) in EXPECTED.items():
        assert label_names(by_name[name]) == labels, name


def test_naming_conventions(registry: CollectorRegistry, metrics: LifecycleMetrics) -> None:
    for name, kind in exposed_types(registry).items():
        assert re.fullmatch(r"lifecycle_[a-z0-9_]+", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        # durations are in seconds; consumer lag is in messages, not time
        timed = kind == "histogram" or re.search(r"(latency|lag|age|duration|bound)_", name + "_")
        if timed and name != "lifecycle_consumer_lag":
            assert name.endswith("_seconds"), name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|days)(_|$)", name), name


def test_no_label_can_carry_personal_data(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    seen: set[str] = set()
    for f in fields(metrics):
        value = getattr(metrics, f.name)
        if isinstance(value, Counter | Gauge | Histogram):
            seen |= label_names(value)
    assert seen <= ALLOWED_LABELS
    for label in seen:
        assert not set(label.split("_")) & FORBIDDEN_LABEL_PARTS, label


def test_label_values_that_look_like_personal_data_are_masked(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.observe_event("lifecycle.in.crm", "alice@example.com")
    metrics.observe_decision("rule with spaces", "delete")
    text = generate_latest(registry).decode()
    assert "alice" not in text
    assert "with spaces" not in text
    assert sample(
        registry,
        "lifecycle_events_consumed_total",
        topic="lifecycle.in.crm",
        event_type="invalid",
    ) == pytest.approx(1)


def test_worker_info_is_one(registry: CollectorRegistry, metrics: LifecycleMetrics) -> None:
    assert sample(
        registry, "lifecycle_worker_info", version="1.2.3", policy_version="notice-2024.1"
    ) == pytest.approx(1)


def test_observe_ack_counts_outcome_failure_and_latency(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.observe_command("crm", "delete", "n6-contract-end")
    metrics.observe_ack("crm", "delete", "done", 30.0)
    metrics.observe_ack("crm", "delete", "failed", 3 * 86400.0)
    labels = {"system": "crm", "action": "delete"}
    assert sample(
        registry, "lifecycle_commands_emitted_total", rule_id="n6-contract-end", **labels
    ) == pytest.approx(1)
    assert sample(
        registry, "lifecycle_commands_acknowledged_total", outcome="done", **labels
    ) == pytest.approx(1)
    assert sample(registry, "lifecycle_commands_failed_total", **labels) == pytest.approx(1)
    hist = "lifecycle_command_ack_latency_seconds"
    assert sample(registry, hist + "_count", system="crm") == pytest.approx(2)
    assert sample(registry, hist + "_bucket", system="crm", le="60.0") == pytest.approx(1)
    assert sample(registry, hist + "_bucket", system="crm", le="259200.0") == pytest.approx(2)


def test_ack_latency_buckets_span_seconds_to_days(metrics: LifecycleMetrics) -> None:
    upper = metrics.command_ack_latency._upper_bounds
    assert upper[0] <= 1.0
    assert 7 * 86400.0 in upper
    assert max(b for b in upper if b != float("inf")) >= 30 * 86400.0


def test_dead_letter_reason_is_a_closed_set(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.observe_dead_letter("lifecycle.in.crm", "bad_framing")
    metrics.observe_dead_letter("lifecycle.in.crm", "KeyError: 'subject 42'")
    assert sample(
        registry, "lifecycle_dead_letters_total", topic="lifecycle.in.crm", reason_class="other"
    ) == pytest.approx(1)
    assert sample(
        registry,
        "lifecycle_dead_letters_total",
        topic="lifecycle.in.crm",
        reason_class="bad_framing",
    ) == pytest.approx(1)


@pytest.mark.parametrize(
    ("age", "bucket"),
    [(0.0, "under_1h"), (3599.9, "under_1h"), (3600.0, "1h_to_1d"), (86400.0, "1d_to_7d"),
     (7 * 86400.0, "over_7d"), (400 * 86400.0, "over_7d")],
)  # fmt: skip
def test_outstanding_age_bucket(age: float, bucket: str) -> None:
    assert outstanding_age_bucket(age) == bucket


def test_set_outstanding_replaces_and_keeps_known_systems_at_zero(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.set_outstanding({"crm": [10.0, 5000.0, 8 * 86400.0], "billing-db": []})
    out = "lifecycle_commands_outstanding"
    assert sample(registry, out, system="crm", bucket="over_7d") == pytest.approx(1)
    assert sample(registry, out, system="billing-db", bucket="under_1h") == pytest.approx(0)
    oldest = "lifecycle_command_oldest_outstanding_age_seconds"
    assert sample(registry, oldest, system="crm") == pytest.approx(8 * 86400.0)
    assert sample(registry, oldest, system="billing-db") == pytest.approx(0)
    metrics.set_outstanding({"billing-db": [1.0]})
    assert sample(registry, out, system="crm", bucket="over_7d") is None
    assert sample(registry, oldest, system="crm") is None
    assert sample(registry, out, system="billing-db", bucket="under_1h") == pytest.approx(1)


def test_set_ack_bounds(registry: CollectorRegistry, metrics: LifecycleMetrics) -> None:
    metrics.set_ack_bounds({"crm": 86400.0})
    assert sample(registry, "lifecycle_command_ack_bound_seconds", system="crm") == pytest.approx(
        86400.0
    )


NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("due", "bucket"),
    [
        (NOW - timedelta(seconds=1), "overdue"),
        (NOW, "due_7d"),
        (NOW + timedelta(days=7), "due_7d"),
        (NOW + timedelta(days=7, seconds=1), "later"),
    ],
)
def test_deadline_bucket(due: datetime, bucket: str) -> None:
    assert deadline_bucket(due, NOW) == bucket
    assert bucket in REQUEST_DEADLINE_BUCKETS


def test_deadline_bucket_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        deadline_bucket(datetime(2025, 1, 1), NOW)


def test_set_requests_open_fills_every_bucket_and_replaces(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.set_requests_open({("erasure", "overdue"): 2, ("access", "later"): 1})
    name = "lifecycle_requests_open"
    assert sample(registry, name, request_type="erasure", bucket="overdue") == pytest.approx(2)
    assert sample(registry, name, request_type="erasure", bucket="due_7d") == pytest.approx(0)
    assert sample(registry, name, request_type="access", bucket="overdue") == pytest.approx(0)
    metrics.set_requests_open({("access", "due_7d"): 1})
    assert sample(registry, name, request_type="erasure", bucket="overdue") is None
    assert sample(registry, name, request_type="access", bucket="later") == pytest.approx(0)
    with pytest.raises(ValueError, match="deadline bucket"):
        metrics.set_requests_open({("access", "soon"): 1})


def test_set_consumer_lag_drops_revoked_partitions(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.set_consumer_lag({("lifecycle.acks", 0): 7, ("lifecycle.acks", 1): 3})
    metrics.set_consumer_lag({("lifecycle.acks", 1): 4})
    name = "lifecycle_consumer_lag"
    assert sample(registry, name, topic="lifecycle.acks", partition="0") is None
    assert sample(registry, name, topic="lifecycle.acks", partition="1") == pytest.approx(4)


def test_timers_requests_audit(registry: CollectorRegistry, metrics: LifecycleMetrics) -> None:
    metrics.set_timers_scheduled(12)
    metrics.observe_timer_fired(2.0)
    metrics.observe_timer_fired(-1.0)  # early (clock skew) counts as no lag
    metrics.observe_request_received("erasure")
    metrics.observe_request_closed("erasure", "completed")
    metrics.observe_audit("command_acknowledged")
    metrics.observe_resend("crm", "delete")
    metrics.observe_escalation("crm", "delete")
    assert sample(registry, "lifecycle_timers_scheduled") == pytest.approx(12)
    assert sample(registry, "lifecycle_timer_lag_seconds_count") == pytest.approx(2)
    assert sample(registry, "lifecycle_timer_lag_seconds_sum") == pytest.approx(2.0)
    assert sample(
        registry, "lifecycle_requests_received_total", request_type="erasure"
    ) == pytest.approx(1)
    assert sample(
        registry, "lifecycle_requests_closed_total", request_type="erasure", outcome="completed"
    ) == pytest.approx(1)
    assert sample(
        registry, "lifecycle_audit_events_written_total", event_type="command_acknowledged"
    ) == pytest.approx(1)
    for name in ("lifecycle_commands_resent_total", "lifecycle_commands_escalated_total"):
        assert sample(registry, name, system="crm", action="delete") == pytest.approx(1)


def test_a_registry_takes_one_bundle(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LifecycleMetrics.create(registry, version="x", policy_version="y")


def test_faust_sensors_share_the_registry_without_a_web_route(
    registry: CollectorRegistry, metrics: LifecycleMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = faust.App("metrics-test", broker="memory://", store="memory://")

    def no_route(*args: object, **kwargs: object) -> None:
        raise AssertionError("install_faust_sensors must not add a web route")

    monkeypatch.setattr(app, "page", no_route)
    monitor = install_faust_sensors(app, registry)
    assert app.monitor is monitor
    types = exposed_types_all(registry)
    assert types["faust_messages_received_total"] == "counter"
    assert "lifecycle_events_consumed_total" in types


def exposed_types_all(registry: CollectorRegistry) -> dict[str, str]:
    text = generate_latest(registry).decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def test_deployment_doc_lists_every_metric() -> None:
    doc = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    missing = [n for n in METRIC_NAMES if f"`{n}`" not in doc]
    assert not missing


def test_declare_creates_zero_series_for_alerted_counters(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.declare(
        systems=["crm", "billing-db"],
        actions=["delete", "suppress_marketing"],
        request_types=["erasure"],
        dead_letter_topics=["lifecycle.in.crm"],
        retry_steps=["send"],
    )
    for name in (
        "lifecycle_commands_escalated_total",
        "lifecycle_commands_failed_total",
        "lifecycle_commands_resent_total",
    ):
        assert sample(registry, name, system="billing-db", action="delete") == 0.0
    assert sample(registry, "lifecycle_command_ack_latency_seconds_count", system="crm") == 0.0
    assert sample(registry, "lifecycle_requests_received_total", request_type="erasure") == 0.0
    assert (
        sample(
            registry,
            "lifecycle_dead_letters_total",
            topic="lifecycle.in.crm",
            reason_class="bad_framing",
        )
        == 0.0
    )
    assert (
        sample(
            registry,
            "lifecycle_items_parked_total",
            topic="lifecycle.in.crm",
            failure_class="unknown_topic",
        )
        == 0.0
    )
    assert sample(registry, "lifecycle_transient_retries_total", step="send") == 0.0


def test_parked_and_retries_are_counted(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    metrics.observe_parked("t.in.crm", "record_too_large")
    metrics.observe_parked("t.in.crm", "free text from somewhere")
    metrics.observe_retry("send")
    parked = "lifecycle_items_parked_total"
    assert sample(registry, parked, topic="t.in.crm", failure_class="record_too_large") == 1.0
    assert sample(registry, parked, topic="t.in.crm", failure_class="other") == 1.0
    assert sample(registry, "lifecycle_transient_retries_total", step="send") == 1.0


def test_a_failing_observer_never_raises(
    metrics: LifecycleMetrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("cust-1@example.com")

    monkeypatch.setattr(Counter, "inc", broken)
    with caplog.at_level(logging.ERROR):
        metrics.observe_event("t.in.crm", "CallRecorded")
        metrics.observe_command("crm", "delete", "N7")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "metric observe_event failed (RuntimeError); ignored",
        "metric observe_command failed (RuntimeError); ignored",
    ]


def test_consumer_lag_from_a_faust_monitor(
    registry: CollectorRegistry, metrics: LifecycleMetrics
) -> None:
    from faust.sensors.monitor import Monitor
    from faust.types import TP

    monitor = Monitor()
    monitor.track_tp_end_offset(TP("lifecycle.acks", 0), 120)
    monitor.track_tp_end_offset(TP("lifecycle.acks", 1), 40)
    monitor.on_tp_commit({TP("lifecycle.acks", 0): 100})
    metrics.set_consumer_lag_from_monitor(monitor)
    name = "lifecycle_consumer_lag"
    assert sample(registry, name, topic="lifecycle.acks", partition="0") == pytest.approx(20)
    assert sample(registry, name, topic="lifecycle.acks", partition="1") == pytest.approx(40)
