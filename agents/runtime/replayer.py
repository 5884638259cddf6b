"""Erasures re-applied after a downstream restore (N9.erasure-replay).

``ErasureReplayer.replay(system, since, restore_id)`` reads the erasure ledger
(``<prefix>.erasure-ledger``, written by the worker when a DELETE is
confirmed; ``agents/rules/ledger.py``) from ``since`` minus the policy's clock
margin, and sends each entry of ``system`` to its subject's worker as an
``ErasureReplay`` on ``<prefix>.erasure-replays`` (keyed by subject and
co-partitioned with the inputs, so it reaches the worker that owns the
subject's state). The worker re-sends the DELETE with
its original command id and audits ``erasure-replayed``.

The ledger topic stamps entries with the broker's time (``LogAppendTime``),
and an entry is appended after the deletion it records was confirmed, so
``offsets_for_times(since)`` finds the first entry that can concern a backup
taken at ``since``: a replay reads only what was erased since then, not the
whole ledger, and streams it in batches (memory does not grow with the size of
an erasure: 10^5 records are 200 entries of at most 500 record ids; only the
ids of the commands already re-sent are kept, to send each once).

``RestoreListener`` does the same for every ``SystemRestored`` event a system
publishes on ``<prefix>.restores`` (``Publisher.publish_restored``), and
commits the event only after all of its replays were confirmed by the broker.
An entry or event that cannot be read goes to the dead-letter topic with the
reason, and the count is reported: never dropped silently.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from agents.clock import Clock
from schemas.deadletter import DeadLetter
from schemas.internal import ErasureLedgerEntry, ErasureReplay, SystemRestored

if TYPE_CHECKING:
    from agents.runtime.replayer_metrics import ReplayerMetrics
from streams.codec import Codec
from streams.deadletter import DeadLetterSink, decode_or_dead_letter, log_dead_letter
from streams.publisher import Publisher
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger(__name__)

# ErasureReplay messages published per broker round trip.
BATCH = 1_000
POLL_S = 1.0
# Replay reports a running listener keeps (the metrics count them all).
KEPT_REPORTS = 100


@dataclass(frozen=True)
class ReplayReport:
    """What one replay sent: ledger entries re-sent, records they name, subjects,
    and ledger entries that could not be read (dead-lettered)."""

    system: str
    since: datetime
    restore_id: str
    entries: int
    records: int
    subjects: int
    unreadable: int

    def summary(self) -> str:
        return (
            f"restore {self.restore_id}: {self.entries} deletion(s) of {self.records} record(s) "
            f"for {self.subjects} subject(s) re-sent to {self.system} (erased since "
            f"{self.since.isoformat()}); {self.unreadable} unreadable ledger entr(y/ies)"
        )


class ErasureReplayer:
    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        *,
        clock: Clock,
        clock_margin: timedelta = timedelta(0),
    ) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.codec = Codec.from_settings(settings)
        self.clock = clock
        self.clock_margin = clock_margin

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.settings.topic_prefix}.ledger-read.{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                # Ledger entries are written in the worker's transactions.
                "isolation.level": "read_committed",
                **self.settings.security.confluent_config(),
            }
        )

    def entries_since(
        self, since: datetime, dead_letters: list[DeadLetter]
    ) -> Iterator[ErasureLedgerEntry]:
        """Every ledger entry appended at or after ``since`` - margin, partition by
        partition up to the end the ledger had when the read started."""
        topic = self.names.erasure_ledger
        consumer = self._consumer()
        try:
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            if meta.error is not None:
                raise RuntimeError(f"cannot read {topic}: {meta.error}")
            start_ms = int((since - self.clock_margin).timestamp() * 1000)
            wanted = [TopicPartition(topic, p, start_ms) for p in sorted(meta.partitions)]
            starts = consumer.offsets_for_times(wanted, timeout=30)
            ends: dict[int, int] = {}
            assignment: list[TopicPartition] = []
            for tp in starts:
                high = consumer.get_watermark_offsets(tp, timeout=30)[1]
                if tp.offset in (OFFSET_END, -1) or tp.offset >= high:
                    continue  # nothing appended since then
                ends[tp.partition] = high
                assignment.append(TopicPartition(topic, tp.partition, tp.offset))
            consumer.assign(assignment)
            while ends:
                msg = consumer.poll(POLL_S)
                entry = None if msg is None else self._entry(msg, ends, dead_letters)
                if entry is not None:
                    yield entry
                # The position, not the last record, says a partition is done: the
                # ledger is written in transactions, whose commit markers take the
                # last offsets and are never delivered.
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition]:
                        del ends[tp.partition]
        finally:
            consumer.close()

    def _entry(
        self, msg: Message, ends: dict[int, int], dead_letters: list[DeadLetter]
    ) -> ErasureLedgerEntry | None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("ledger read: %s", error)
            return None
        if int(msg.partition() or 0) not in ends:
            return None
        entry = self._decode(msg, ErasureLedgerEntry, dead_letters)
        return entry if isinstance(entry, ErasureLedgerEntry) else None

    def _decode(
        self,
        msg: Message,
        model: type[ErasureLedgerEntry] | type[SystemRestored],
        dead: list[DeadLetter],
    ) -> ErasureLedgerEntry | SystemRestored | None:
        decoded = decode_or_dead_letter(
            msg.key(),
            msg.value(),
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            self.clock.now(),
            codec=self.codec,
            expected=(model,),
            check_key=False,
        )
        if isinstance(decoded, DeadLetter):
            dead.append(decoded)
            return None
        value = decoded.model
        assert isinstance(value, model)
        return value

    def park(self, dead: list[DeadLetter]) -> None:
        """Unreadable ledger entries or restore events to the dead-letter topic
        (``send`` raises unless the broker confirms each)."""
        if not dead:
            return
        sink = DeadLetterSink(self.bootstrap, self.settings, codec=self.codec)
        try:
            for letter in dead:
                log_dead_letter(letter, log)
                sink.send(letter)
        finally:
            sink.close()

    def replay(self, system: str, since: datetime, restore_id: str) -> ReplayReport:
        """Send every deletion recorded for ``system`` since ``since`` to its worker
        again; returns once the broker has confirmed every ``ErasureReplay``."""
        dead: list[DeadLetter] = []
        entries = records = 0
        subjects: set[str] = set()
        # The ledger may still hold an older entry of a command (not compacted
        # yet, or replayed before): each command is re-sent once per replay.
        sent: set[str] = set()
        batch: list[ErasureReplay] = []
        with Publisher(self.bootstrap, self.settings, codec=self.codec) as publisher:
            for entry in self.entries_since(since, dead):
                if entry.system != system or entry.command_id in sent:
                    continue
                sent.add(entry.command_id)
                batch.append(_replay_of(entry, restore_id, since))
                entries += 1
                records += len(entry.record_ids)
                subjects.add(entry.subject_id)
                if len(batch) >= BATCH:
                    publisher.publish_many(batch, topic=self.names.erasure_replays)
                    batch = []
            if batch:
                publisher.publish_many(batch, topic=self.names.erasure_replays)
        self.park(dead)
        report = ReplayReport(system, since, restore_id, entries, records, len(subjects), len(dead))
        log.info("%s", report.summary())
        return report


def _replay_of(entry: ErasureLedgerEntry, restore_id: str, since: datetime) -> ErasureReplay:
    return ErasureReplay(
        subject_id=entry.subject_id,
        restore_id=restore_id,
        backup_taken_at=since,
        command_id=entry.command_id,
        system=entry.system,
        controller_id=entry.controller_id,
        record_ids=entry.record_ids,
        categories=entry.categories,
        rule_id=entry.rule_id,
        request_id=entry.request_id,
        erased_at=entry.erased_at,
    )


class RestoreListener:
    """Replays erasures for every ``SystemRestored`` on ``<prefix>.restores``."""

    def __init__(
        self,
        replayer: ErasureReplayer,
        *,
        group_id: str | None = None,
        metrics: ReplayerMetrics | None = None,
    ) -> None:
        self.replayer = replayer
        self.metrics = metrics
        settings = replayer.settings
        self.consumer = Consumer(
            {
                "bootstrap.servers": replayer.bootstrap,
                "group.id": group_id or f"{settings.topic_prefix}.erasure-replayer",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **settings.security.confluent_config(),
            }
        )
        # The latest reports, for whoever runs the listener in process (tests).
        self.reports: deque[ReplayReport] = deque(maxlen=KEPT_REPORTS)
        self._stop = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.replayer.names.restores])
        try:
            while not self._stop.is_set():
                msg = self.consumer.poll(0.5)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("restores: %s", error)
                    continue
                self.handle(msg)
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._stop.set()

    def handle(self, msg: Message) -> None:
        dead: list[DeadLetter] = []
        event = self.replayer._decode(msg, SystemRestored, dead)
        if isinstance(event, SystemRestored):
            report = self.replayer.replay(event.system, event.backup_taken_at, event.restore_id)
            self.reports.append(report)
            if self.metrics is not None:
                self.metrics.observe_replay(report, self.replayer.clock.now().timestamp())
        else:
            self.replayer.park(dead)
            if self.metrics is not None:
                self.metrics.observe_unreadable(len(dead))
        # Only now: every replay (or the dead letter) is confirmed by the broker.
        self.consumer.commit(message=msg, asynchronous=False)
