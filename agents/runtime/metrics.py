"""Prometheus metrics for the lifecycle worker, declared once as a typed bundle.

Naming follows Prometheus conventions: base units (seconds), counters end in
``_total``, durations in ``_seconds``. Labels are drawn only from
:data:`ALLOWED_LABELS`; no metric ever carries a subject id or any personal
data, and label values are sanitised so an e-mail address or free text cannot
become a time series by accident.

Usage (the worker serves ``/metrics`` itself)::

    registry = CollectorRegistry()
    metrics = LifecycleMetrics.create(registry, version=__version__, policy_version=pv)
    install_faust_sensors(app, registry)           # before the app starts
    start_http_server(settings.metrics_port, registry=registry)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, ParamSpec

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.deadletter import FailureClass, ReasonClass

if TYPE_CHECKING:
    from faust.sensors.prometheus import PrometheusMonitor

__all__ = [
    "ACK_LATENCY_BUCKETS",
    "ALLOWED_LABELS",
    "AUDIT_ERROR_OUTCOMES",
    "AUDIT_OPERATIONS",
    "DEAD_LETTER_REASONS",
    "FAILURE_CLASSES",
    "METRIC_NAMES",
    "OUTSTANDING_AGE_BUCKETS",
    "REQUEST_DEADLINE_BUCKETS",
    "TIMER_LAG_BUCKETS",
    "LifecycleMetrics",
    "deadline_bucket",
    "install_faust_sensors",
    "never_raises",
    "outstanding_age_bucket",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")

MINUTE: Final = 60.0
HOUR: Final = 3600.0
DAY: Final = 86400.0

#: Every label name a lifecycle metric may use.
ALLOWED_LABELS: Final = frozenset(
    {
        "topic",
        "event_type",
        "rule_id",
        "system",
        "action",
        "outcome",
        "reason_class",
        "failure_class",
        "step",
        "request_type",
        "bucket",
        "partition",
        "decision",
        "operation",
        # A policy purpose id (a slug from the policy file, never free text).
        "purpose",
        # Only on lifecycle_worker_info:
        "version",
        "policy_version",
    }
)

#: Ack latency spans a second (an automated store) to weeks (a processor that
#: answers by e-mail), so buckets run from 1 s to 30 days.
ACK_LATENCY_BUCKETS: Final = (
    1.0,
    5.0,
    15.0,
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    4 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    3 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
)

#: How late a timer fired, from sub-second to a day (a worker down overnight).
TIMER_LAG_BUCKETS: Final = (
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    6 * HOUR,
    DAY,
)

#: ``bucket`` label values of ``lifecycle_requests_open``.
REQUEST_DEADLINE_BUCKETS: Final = ("overdue", "due_7d", "later")
DUE_SOON: Final = timedelta(days=7)

#: ``bucket`` label values of ``lifecycle_commands_outstanding`` with their upper
#: age bound in seconds (the last one is unbounded).
OUTSTANDING_AGE_BUCKETS: Final = (
    ("under_1h", HOUR),
    ("1h_to_1d", DAY),
    ("1d_to_7d", 7 * DAY),
    ("over_7d", math.inf),
)

#: ``reason_class`` values of ``lifecycle_dead_letters_total``; anything else is
#: counted as ``other`` so a free-text reason can never explode cardinality.
# The codec's reason classes, so the metric and the dead letter agree.
DEAD_LETTER_REASONS: Final = frozenset({*(r.value for r in ReasonClass), "other"})

#: ``failure_class`` values of ``lifecycle_items_parked_total``.
FAILURE_CLASSES: Final = frozenset(f.value for f in FailureClass)

#: The exposed name of every metric in the bundle (as in a scrape).
METRIC_NAMES: Final = (
    "lifecycle_worker_info",
    "lifecycle_events_consumed_total",
    "lifecycle_dead_letters_total",
    "lifecycle_decisions_total",
    "lifecycle_commands_emitted_total",
    "lifecycle_commands_acknowledged_total",
    "lifecycle_commands_failed_total",
    "lifecycle_commands_resent_total",
    "lifecycle_commands_escalated_total",
    "lifecycle_command_ack_latency_seconds",
    "lifecycle_commands_outstanding",
    "lifecycle_command_oldest_outstanding_age_seconds",
    "lifecycle_command_ack_bound_seconds",
    "lifecycle_timers_scheduled",
    "lifecycle_timer_lag_seconds",
    "lifecycle_requests_received_total",
    "lifecycle_requests_closed_total",
    "lifecycle_requests_open",
    "lifecycle_audit_events_written_total",
    "lifecycle_audit_write_errors_total",
    "lifecycle_consumer_lag",
    "lifecycle_items_parked_total",
    "lifecycle_transient_retries_total",
    "lifecycle_processing_without_consent_total",
    "lifecycle_late_records_total",
)

#: ``operation`` label values of ``lifecycle_audit_write_errors_total``.
AUDIT_OPERATIONS: Final = ("fence", "read_head", "commit")
#: ``outcome`` label values of ``lifecycle_audit_write_errors_total``.
AUDIT_ERROR_OUTCOMES: Final = ("retried", "unavailable", "fenced", "refused", "unreadable")

# A label value: identifiers, topic names, versions. No '@', spaces or other
# free-text characters, bounded length.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,99}")
INVALID_LABEL: Final = "invalid"


def _lv(value: object) -> str:
    """Return a safe label value: the value itself if it looks like an id, else 'invalid'."""
    text = str(value)
    return text if _LABEL_VALUE.fullmatch(text) else INVALID_LABEL


def never_raises(observe: Callable[P, None]) -> Callable[P, None]:
    """A metric must never cost an event its processing.

    Observers run between a decision's sends; one raising there would leave
    the event half handled. A failing observer is logged (its name and the
    exception type, no values) and the event goes on.
    """

    @functools.wraps(observe)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            observe(*args, **kwargs)
        except Exception as exc:
            log.error("metric %s failed (%s); ignored", observe.__name__, type(exc).__name__)

    return guarded


def deadline_bucket(due: datetime, now: datetime) -> str:
    """The ``bucket`` of an open request: overdue, due within 7 days, or later."""
    if due.tzinfo is None or now.tzinfo is None:
        raise ValueError("deadline_bucket needs timezone-aware datetimes")
    if due < now:
        return "overdue"
    if due - now <= DUE_SOON:
        return "due_7d"
    return "later"


def outstanding_age_bucket(age_s: float) -> str:
    """The ``bucket`` of an outstanding command of the given age in seconds."""
    for name, upper in OUTSTANDING_AGE_BUCKETS:
        if age_s < upper:
            return name
    return OUTSTANDING_AGE_BUCKETS[-1][0]  # pragma: no cover - inf bound always matches


def _replace(gauge: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
    """Set a labelled gauge to exactly ``values``; label sets not given are removed."""
    wanted = {tuple(_lv(v) for v in key): val for key, val in values.items()}
    for metric in gauge.collect():
        for sample in metric.samples:
            key = tuple(sample.labels[name] for name in gauge._labelnames)
            if key not in wanted:
                with contextlib.suppress(KeyError):  # removed concurrently
                    gauge.remove(*key)
    for key, val in wanted.items():
        gauge.labels(*key).set(val)


@dataclass(frozen=True)
class LifecycleMetrics:
    """Every metric of the worker. Create with :meth:`create`, one per registry."""

    worker_info: Gauge
    events_consumed: Counter
    dead_letters: Counter
    decisions: Counter
    commands_emitted: Counter
    commands_acknowledged: Counter
    commands_failed: Counter
    commands_resent: Counter
    commands_escalated: Counter
    command_ack_latency: Histogram
    commands_outstanding: Gauge
    command_oldest_outstanding_age: Gauge
    command_ack_bound: Gauge
    timers_scheduled: Gauge
    timer_lag: Histogram
    requests_received: Counter
    requests_closed: Counter
    requests_open: Gauge
    audit_events_written: Counter
    audit_write_errors: Counter
    consumer_lag: Gauge
    items_parked: Counter
    transient_retries: Counter
    processing_without_consent: Counter
    late_records: Counter
    registry: CollectorRegistry = field(repr=False, compare=False)

    @classmethod
    def create(
        cls, registry: CollectorRegistry, *, version: str, policy_version: str
    ) -> LifecycleMetrics:
        r = registry
        bundle = cls(
            worker_info=Gauge(
                "lifecycle_worker_info",
                "Always 1; labels say which code and policy version the worker runs.",
                ["version", "policy_version"],
                registry=r,
            ),
            events_consumed=Counter(
                "lifecycle_events_consumed_total",
                "Input events consumed and decoded, by topic and event type.",
                ["topic", "event_type"],
                registry=r,
            ),
            dead_letters=Counter(
                "lifecycle_dead_letters_total",
                "Messages sent to the dead-letter topic, by source topic and reason class.",
                ["topic", "reason_class"],
                registry=r,
            ),
            decisions=Counter(
                "lifecycle_decisions_total",
                "Policy decisions taken, by rule and decision.",
                ["rule_id", "decision"],
                registry=r,
            ),
            commands_emitted=Counter(
                "lifecycle_commands_emitted_total",
                "Commands sent to downstream systems (first sends, not resends).",
                ["system", "action", "rule_id"],
                registry=r,
            ),
            commands_acknowledged=Counter(
                "lifecycle_commands_acknowledged_total",
                "Acknowledgements received, by system, action and outcome.",
                ["system", "action", "outcome"],
                registry=r,
            ),
            commands_failed=Counter(
                "lifecycle_commands_failed_total",
                "Commands acknowledged with outcome=failed, by system and action.",
                ["system", "action"],
                registry=r,
            ),
            commands_resent=Counter(
                "lifecycle_commands_resent_total",
                "Commands resent because no acknowledgement arrived in time.",
                ["system", "action"],
                registry=r,
            ),
            processing_without_consent=Counter(
                "lifecycle_processing_without_consent_total",
                "Records a system registered on consent that was withdrawn (N4), by "
                "system and purpose: each got a stop (or delete) command at once.",
                ["system", "purpose"],
                registry=r,
            ),
            late_records=Counter(
                "lifecycle_late_records_total",
                "Records reported after a request they predate was answered or "
                "settled (event time at or before its receipt), by system and request type.",
                ["system", "request_type"],
                registry=r,
            ),
            commands_escalated=Counter(
                "lifecycle_commands_escalated_total",
                "Commands escalated to a human after resends were exhausted or failed.",
                ["system", "action"],
                registry=r,
            ),
            command_ack_latency=Histogram(
                "lifecycle_command_ack_latency_seconds",
                "Time from first send of a command to its acknowledgement.",
                ["system"],
                buckets=ACK_LATENCY_BUCKETS,
                registry=r,
            ),
            commands_outstanding=Gauge(
                "lifecycle_commands_outstanding",
                "Commands sent and not yet acknowledged, by system and age bucket.",
                ["system", "bucket"],
                registry=r,
            ),
            command_oldest_outstanding_age=Gauge(
                "lifecycle_command_oldest_outstanding_age_seconds",
                "Age of the oldest unacknowledged command per system (0 when none).",
                ["system"],
                registry=r,
            ),
            command_ack_bound=Gauge(
                "lifecycle_command_ack_bound_seconds",
                "Policy bound on how long a system may take to acknowledge a command.",
                ["system"],
                registry=r,
            ),
            timers_scheduled=Gauge(
                "lifecycle_timers_scheduled",
                "Timed items (expiries, deadlines, resends) scheduled on this worker.",
                registry=r,
            ),
            timer_lag=Histogram(
                "lifecycle_timer_lag_seconds",
                "How late a timer fired: firing time minus due time.",
                buckets=TIMER_LAG_BUCKETS,
                registry=r,
            ),
            requests_received=Counter(
                "lifecycle_requests_received_total",
                "Rights requests and complaints received, by type.",
                ["request_type"],
                registry=r,
            ),
            requests_closed=Counter(
                "lifecycle_requests_closed_total",
                "Rights requests and complaints closed, by type and outcome.",
                ["request_type", "outcome"],
                registry=r,
            ),
            requests_open=Gauge(
                "lifecycle_requests_open",
                "Open requests by type and deadline bucket (overdue, due_7d, later).",
                ["request_type", "bucket"],
                registry=r,
            ),
            audit_events_written=Counter(
                "lifecycle_audit_events_written_total",
                "Audit events written to the audit topic, by audit event type.",
                ["event_type"],
                registry=r,
            ),
            audit_write_errors=Counter(
                "lifecycle_audit_write_errors_total",
                "Errors writing the audit chain, by operation (fence, read_head, commit) and "
                "outcome: retried (transient, retried with backoff), unavailable (retries "
                "exhausted), fenced (another worker owns the partition), refused (permanent), "
                "unreadable (an undecodable record skipped at the chain's tail).",
                ["operation", "outcome"],
                registry=r,
            ),
            consumer_lag=Gauge(
                "lifecycle_consumer_lag",
                "Messages between the committed offset and the end of each "
                "partition this worker consumes.",
                ["topic", "partition"],
                registry=r,
            ),
            items_parked=Counter(
                "lifecycle_items_parked",
                "Decoded messages parked on the dead-letter topic because they could not "
                "be processed or an output could not be delivered, for good; by source "
                "topic and failure class.",
                ["topic", "failure_class"],
                registry=r,
            ),
            transient_retries=Counter(
                "lifecycle_transient_retries",
                "Retries of a step that failed transiently (broker or network briefly "
                "unavailable), by step.",
                ["step"],
                registry=r,
            ),
            registry=r,
        )
        bundle.worker_info.labels(_lv(version), _lv(policy_version)).set(1)
        # Created at zero so an alert's increase() sees the first error.
        for operation in AUDIT_OPERATIONS:
            for outcome in AUDIT_ERROR_OUTCOMES:
                bundle.audit_write_errors.labels(operation, outcome)
        return bundle

    def declare(
        self,
        *,
        systems: Iterable[str],
        actions: Iterable[str],
        request_types: Iterable[str] = (),
        dead_letter_topics: Iterable[str] = (),
        retry_steps: Iterable[str] = (),
    ) -> None:
        """Create the zero series for known label values at start-up.

        ``increase()`` cannot see a counter's first increment when the series
        appears with value 1, so the counters the alerts watch are created at 0
        for every system/action (and request type, dead-letter source topic,
        retried step).
        """
        systems, actions = [_lv(s) for s in systems], [_lv(a) for a in actions]
        for system in systems:
            self.command_ack_latency.labels(system)
            for action in actions:
                for counter in (
                    self.commands_failed,
                    self.commands_resent,
                    self.commands_escalated,
                ):
                    counter.labels(system, action)
        for request_type in request_types:
            self.requests_received.labels(_lv(request_type))
        for topic in dead_letter_topics:
            for reason in sorted(DEAD_LETTER_REASONS):
                self.dead_letters.labels(_lv(topic), reason)
            for failure in sorted(FAILURE_CLASSES):
                self.items_parked.labels(_lv(topic), failure)
        for step in retry_steps:
            self.transient_retries.labels(_lv(step))

    # -- ingest ------------------------------------------------------------
    @never_raises
    def observe_event(self, topic: str, event_type: str) -> None:
        self.events_consumed.labels(_lv(topic), _lv(event_type)).inc()

    @never_raises
    def observe_dead_letter(self, topic: str, reason_class: str) -> None:
        reason = reason_class if reason_class in DEAD_LETTER_REASONS else "other"
        self.dead_letters.labels(_lv(topic), reason).inc()

    @never_raises
    def observe_decision(self, rule_id: str, decision: str) -> None:
        self.decisions.labels(_lv(rule_id), _lv(decision)).inc()

    @never_raises
    def observe_audit(self, event_type: str) -> None:
        self.audit_events_written.labels(_lv(event_type)).inc()

    def observe_audit_error(self, operation: str, outcome: str) -> None:
        """An audit write error: ``operation`` in AUDIT_OPERATIONS, ``outcome`` in
        AUDIT_ERROR_OUTCOMES."""
        if operation not in AUDIT_OPERATIONS or outcome not in AUDIT_ERROR_OUTCOMES:
            raise ValueError(f"unknown audit error {operation}/{outcome}")
        self.audit_write_errors.labels(operation, outcome).inc()

    # -- commands ----------------------------------------------------------
    @never_raises
    def observe_command(self, system: str, action: str, rule_id: str) -> None:
        self.commands_emitted.labels(_lv(system), _lv(action), _lv(rule_id)).inc()

    @never_raises
    def observe_ack(self, system: str, action: str, outcome: str, latency_s: float) -> None:
        """An acknowledgement arrived ``latency_s`` after the command's first send."""
        sysl, actl = _lv(system), _lv(action)
        self.commands_acknowledged.labels(sysl, actl, _lv(outcome)).inc()
        if outcome == "failed":
            self.commands_failed.labels(sysl, actl).inc()
        self.command_ack_latency.labels(sysl).observe(max(0.0, latency_s))

    @never_raises
    def observe_resend(self, system: str, action: str) -> None:
        self.commands_resent.labels(_lv(system), _lv(action)).inc()

    @never_raises
    def observe_without_consent(self, system: str, purpose: str) -> None:
        self.processing_without_consent.labels(_lv(system), _lv(purpose)).inc()

    @never_raises
    def observe_late_record(self, system: str, request_type: str) -> None:
        self.late_records.labels(_lv(system), _lv(request_type)).inc()

    @never_raises
    def observe_escalation(self, system: str, action: str) -> None:
        self.commands_escalated.labels(_lv(system), _lv(action)).inc()

    def set_ack_bounds(self, bounds_s: Mapping[str, float]) -> None:
        """Per-system acknowledgement bound from the policy (read by the alert)."""
        _replace(self.command_ack_bound, {(s,): v for s, v in bounds_s.items()})

    def set_outstanding(self, ages_s: Mapping[str, Iterable[float]]) -> None:
        """Replace the outstanding-command gauges from each system's pending ages.

        Pass every known system (with an empty iterable when nothing is
        pending) so its series stay at zero rather than disappear.
        """
        counts: dict[tuple[str, ...], float] = {}
        oldest: dict[tuple[str, ...], float] = {}
        for system, ages in ages_s.items():
            for name, _ in OUTSTANDING_AGE_BUCKETS:
                counts[(system, name)] = 0
            oldest[(system,)] = 0.0
            for age in ages:
                counts[(system, outstanding_age_bucket(age))] += 1
                oldest[(system,)] = max(oldest[(system,)], age)
        _replace(self.commands_outstanding, counts)
        _replace(self.command_oldest_outstanding_age, oldest)

    # -- timers ------------------------------------------------------------
    def set_timers_scheduled(self, count: int) -> None:
        self.timers_scheduled.set(count)

    @never_raises
    def observe_timer_fired(self, lag_s: float) -> None:
        """A timer fired ``lag_s`` seconds after its due time (now - due)."""
        self.timer_lag.observe(max(0.0, lag_s))

    # -- requests ----------------------------------------------------------
    @never_raises
    def observe_request_received(self, request_type: str) -> None:
        self.requests_received.labels(_lv(request_type)).inc()

    @never_raises
    def observe_request_closed(self, request_type: str, outcome: str) -> None:
        self.requests_closed.labels(_lv(request_type), _lv(outcome)).inc()

    def set_requests_open(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace ``lifecycle_requests_open`` from ``{(request_type, bucket): n}``.

        Every bucket of every request type given is exported (0 when absent),
        so the overdue series exists and reads 0 rather than vanishing.
        """
        for _, bucket in counts:
            if bucket not in REQUEST_DEADLINE_BUCKETS:
                raise ValueError(f"unknown deadline bucket {bucket!r}")
        values: dict[tuple[str, ...], float] = {
            (rt, b): 0 for rt in {rt for rt, _ in counts} for b in REQUEST_DEADLINE_BUCKETS
        }
        values.update({key: n for key, n in counts.items()})
        _replace(self.requests_open, values)

    # -- failures ----------------------------------------------------------
    @never_raises
    def observe_parked(self, topic: str, failure_class: str) -> None:
        failure = failure_class if failure_class in FAILURE_CLASSES else FailureClass.OTHER.value
        self.items_parked.labels(_lv(topic), failure).inc()

    @never_raises
    def observe_retry(self, step: str) -> None:
        self.transient_retries.labels(_lv(step)).inc()

    # -- Kafka -------------------------------------------------------------
    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace per-partition lag from ``{(topic, partition): lag}``.

        Partitions not given (revoked in a rebalance) are removed.
        """
        _replace(self.consumer_lag, {(t, str(p)): max(0, lag) for (t, p), lag in lags.items()})

    def set_consumer_lag_from_monitor(self, monitor: Any) -> None:
        """Derive per-partition lag from a Faust monitor's end and committed offsets.

        Call periodically (e.g. from an ``app.timer``); partitions with no
        committed offset yet count from 0.
        """
        ends: Mapping[Any, int] = monitor.tp_end_offsets or {}
        committed: Mapping[Any, int] = monitor.tp_committed_offsets or {}
        self.set_consumer_lag(
            {(tp.topic, tp.partition): end - committed.get(tp, 0) for tp, end in ends.items()}
        )


def install_faust_sensors(
    app: Any, registry: CollectorRegistry, *, name_prefix: str = "faust"
) -> PrometheusMonitor:
    """Record Faust's own sensor metrics (``faust_*``) in ``registry``.

    Unlike ``faust.sensors.prometheus.setup_prometheus_sensors`` this adds no
    web route: the worker already serves the registry on the metrics port.
    Call before the app starts (the monitor is added as a sensor at start).
    """
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    prefix = name_prefix.replace("-", "_").replace(".", "_")
    monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, prefix))
    app.monitor = monitor
    return monitor
