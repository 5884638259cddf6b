"""Faust's Prometheus sensor, with its per-message metric children kept.

Faust calls its monitor several times for every message it reads or sends,
and every changelog record a standby replica applies is such a message (about
five per input event). ``PrometheusMonitor`` looks up each labelled child with
``labels()`` on every call: a lock, the label values turned into strings, a
dict lookup. In the worker's profile that was 2-4 % of its CPU, twice that on
a worker also applying a standby's changelog (docs/benchmarks.md). This
monitor keeps the children it used, keyed by the topic partition (or topic,
or stream), and forgets them whenever Faust clears those metrics (every
rebalance), so a cleared child is never written to again. The metrics, their
names, labels and values are Faust's own.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP


class CachingPrometheusMonitor(PrometheusMonitor):
    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics=metrics, **kwargs)
        self._labelled: dict[Hashable, Any] = {}

    def _child(self, key: Hashable, metric: Any, **labels: Any) -> Any:
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = metric.labels(**labels)
        return child

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        Monitor.on_message_in(self, tp, offset, message)
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        self._child(("in", tp.topic), m.messages_received_per_topics, topic=tp.topic).inc()
        self._child(
            ("in", tp),
            m.messages_received_per_topics_partition,
            topic=tp.topic,
            partition=tp.partition,
        ).set(offset)

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> Any:
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        self._child(
            ("stream", id(stream)),
            m.total_events_per_stream,
            stream=f"stream.{self._stream_label(stream)}.events",
        ).inc()
        return state

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        Monitor.track_tp_end_offset(self, tp, offset)
        self._child(
            ("end", tp),
            self._metrics.topic_partition_end_offset,
            topic=tp.topic,
            partition=tp.partition,
        ).set(offset)

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        self._child(
            ("sent", topic), self._metrics.topic_messages_sent, topic=f"topic.{topic}"
        ).inc()
        return Monitor.on_send_initiated(self, producer, topic, message, keysize, valsize)

    def _clear_partition_related_metrics(self) -> None:
        # Faust removes the labelled children here: drop ours with them.
        super()._clear_partition_related_metrics()
        self._labelled.clear()
