"""Probes: how long the pipeline takes to work again after a fault.

Right after a fault, one marketing opt-out is published per input partition
(for a subject chosen to hash to it). A fault has recovered when every probe
has been decided (an audit entry names it) and every marketing system has
acknowledged the probe's suppression: every partition has a live owner and
the path to the downstream systems works. The watcher tails the audit and
acknowledgement topics and notes when each probe gets through; it matches
the probe prefix in the raw bytes before decoding, so it costs little.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, TopicPartition

from schemas.audit import AuditEvent
from schemas.base import Channel
from schemas.commands import AckOutcome, CommandAck
from schemas.events import MarketingOptOutReceived
from streams.codec import Codec, DecodeError
from streams.topics import TopicNames

PROBE_PREFIX = "probe-"


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the murmur2 partitioner (Kafka's and the pipeline's) picks for ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def probe_subject(fault: int, partition: int, partitions: int) -> str:
    """A subject id of fault ``fault``'s probe that lands on ``partition``."""
    for n in range(100_000):
        subject = f"{PROBE_PREFIX}{fault}-{partition}-{n}"
        if partition_of(subject.encode(), partitions) == partition:
            return subject
    raise AssertionError("no probe subject found")  # pragma: no cover


def probe_events(fault: int, partitions: int, now: datetime) -> list[MarketingOptOutReceived]:
    return [
        MarketingOptOutReceived(
            event_id=f"ev-{subject}",
            subject_id=subject,
            source_system="marketing",
            event_time=now,
            channels=[Channel.ALL],
        )
        for subject in (probe_subject(fault, p, partitions) for p in range(partitions))
    ]


@dataclass
class ProbeProgress:
    """When (time.monotonic()) each probe subject was decided and acknowledged."""

    decided: dict[str, float] = field(default_factory=dict)
    # subject -> marketing systems that acknowledged its suppression, and when
    acked: dict[str, dict[str, float]] = field(default_factory=dict)


class ProbeWatcher(threading.Thread):
    """Tails the audit and acknowledgement topics for probe subjects."""

    def __init__(
        self,
        consumer_config: dict[str, str],
        names: TopicNames,
        partitions: int,
        codec: Codec,
        marketing_systems: list[str],
    ) -> None:
        super().__init__(name="chaos-probes", daemon=True)
        self.names = names
        self.codec = codec
        self.marketing_systems = set(marketing_systems)
        self.progress = ProbeProgress()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.consumer = Consumer(
            {
                **consumer_config,
                "group.id": f"{names.prefix}.chaos-probes",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.assign(
            [
                TopicPartition(topic, p, 0)
                for topic in (names.audit, names.acks)
                for p in range(partitions)
            ]
        )

    def run(self) -> None:
        marker = PROBE_PREFIX.encode()
        try:
            while not self._halt.is_set():
                for msg in self.consumer.consume(500, timeout=0.5):
                    value = msg.value()
                    if msg.error() or value is None or marker not in value:
                        continue
                    self._note(msg.topic(), value, time.monotonic())
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def _note(self, topic: str | None, value: bytes, seen: float) -> None:
        try:
            model = self.codec.decode(value, None, now=datetime.now(UTC), check_key=False)
        except DecodeError:
            return
        with self._lock:
            if isinstance(model, AuditEvent):
                for event_id in model.event_ids_in:
                    if event_id.startswith(f"ev-{PROBE_PREFIX}"):
                        self.progress.decided.setdefault(event_id[3:], seen)
            elif (
                isinstance(model, CommandAck)
                and model.subject_id.startswith(PROBE_PREFIX)
                and model.system in self.marketing_systems
                and model.outcome is AckOutcome.DONE
            ):
                self.progress.acked.setdefault(model.subject_id, {}).setdefault(model.system, seen)

    def through(self, subject: str) -> float | None:
        """When the probe was decided and acknowledged by every marketing system, if it was."""
        with self._lock:
            decided = self.progress.decided.get(subject)
            acked = self.progress.acked.get(subject, {})
            if decided is None or not self.marketing_systems <= set(acked):
                return None
            return max([decided, *acked.values()])

    def wait_through(self, subjects: list[str], timeout: float) -> float | None:
        """When the last of ``subjects`` got through, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            times = [self.through(s) for s in subjects]
            if all(t is not None for t in times):
                return max(t for t in times if t is not None)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.25)
