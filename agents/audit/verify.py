"""Reads an audit topic range back and checks its hash chain.

Only committed records are read (``isolation.level=read_committed``): the
worker writes the chain in transactions, and a transaction it aborted (a
fenced writer's, or one cut short by a failure) is not part of the chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from agents.audit.chain import BrokenLink, ChainHead, ChainReport, check_chain
from agents.audit.heads import read_committed_config
from agents.audit.proofs import ProofCheck
from agents.clock import Clock
from agents.runtime.kafka_errors import is_transient_error
from schemas.audit import AuditEvent
from streams.codec import Codec, DecodeError

# A read that gets nothing for this long (while not at the end) has stalled.
STALL_POLLS = 20
POLL_S = 0.5


@dataclass(frozen=True)
class VerifyResult:
    partition: int
    checked: int
    broken: BrokenLink | None
    replayed: int = 0
    redecided: int = 0
    duplicates: int = 0
    # Proofs split over several events (parts, pages) with a piece missing.
    incomplete: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, partition: int, report: ChainReport, incomplete: list[str]) -> VerifyResult:
        return cls(
            partition,
            report.checked,
            report.broken,
            report.replayed,
            report.redecided,
            report.duplicates,
            incomplete,
        )

    def summary(self) -> str:
        """One line for ``lifecycle audit verify``."""
        head = f"partition {self.partition}: "
        if self.broken is not None:
            b = self.broken
            return head + f"BROKEN at offset {b.offset} (sequence {b.sequence}): {b.reason}"
        notes = [
            f"{n} {what}"
            for n, what in (
                (self.replayed, "replayed after a restart (same input, same facts)"),
                (self.redecided, "re-decided after a restart (same input, other facts)"),
                (self.duplicates, "duplicate deliveries skipped"),
            )
            if n
        ]
        notes += [f"INCOMPLETE proof: {problem}" for problem in self.incomplete]
        return head + f"{self.checked} event(s), chain intact" + "".join(f"; {n}" for n in notes)


def read_partition(
    consumer_config: dict[str, str],
    topic: str,
    partition: int,
    codec: Codec,
    clock: Clock,
    start: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, AuditEvent | DecodeError]]:
    """Committed records at offsets [start, end) (default: to the end), decoded."""
    consumer = Consumer(read_committed_config(consumer_config))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        first, stop = max(start, low), high if end is None else min(end, high)
        if first >= stop:
            return
        consumer.assign([TopicPartition(topic, partition, first)])
        idle = 0
        while True:
            msg = consumer.poll(POLL_S)
            error = None if msg is None else msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                return  # the last stable offset: the end of the committed chain
            if error is not None and not is_transient_error(error):
                raise KafkaException(error)
            if msg is None or error is not None:
                idle += 1  # nothing yet, or a problem librdkafka is retrying
                if idle >= STALL_POLLS:
                    raise TimeoutError(f"audit partition {partition} stalled before {stop}")
                continue
            idle = 0
            msg_offset = msg.offset()
            if msg_offset is None:
                continue
            if msg_offset >= stop:
                return  # transaction markers take offsets too, so stop on passing it
            try:
                event = codec.decode(
                    msg.value(), None, now=clock.now(), expected=(AuditEvent,), check_key=False
                )
            except DecodeError as exc:
                yield msg_offset, exc
                continue
            assert isinstance(event, AuditEvent)
            yield msg_offset, event
    finally:
        consumer.close()


def verify_partition(
    consumer_config: dict[str, str],
    topic: str,
    partition: int,
    codec: Codec,
    clock: Clock,
    key: bytes,
    start: int = 0,
    end: int | None = None,
) -> VerifyResult:
    """Verify offsets [start, end) of one partition; from offset 0 the chain starts at genesis.

    Replays after a crash and duplicate deliveries are counted, not failures;
    the first broken link (a changed, forged, removed or reordered record, or
    one that does not decode) is named.
    """
    checked = 0
    proofs = ProofCheck()

    def events() -> Iterator[tuple[int, AuditEvent]]:
        nonlocal checked
        for offset, item in read_partition(
            consumer_config, topic, partition, codec, clock, start, end
        ):
            if isinstance(item, DecodeError):
                raise _Undecodable(offset, str(item))
            checked += 1
            proofs.add(item)
            yield offset, item

    try:
        report = check_chain(events(), key, ChainHead.genesis() if start == 0 else None)
    except _Undecodable as exc:
        broken = BrokenLink(exc.offset, None, f"record does not decode: {exc.reason}")
        return VerifyResult(partition, checked, broken)
    return VerifyResult.of(partition, report, proofs.problems())


class _Undecodable(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
