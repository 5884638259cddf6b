"""Reads an audit topic range back and checks its hash chain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from agents.audit_chain import BrokenLink, ChainHead, verify_chain
from agents.audit_proofs import ProofCheck
from agents.clock import Clock
from schemas.audit import AuditEvent
from streams.codec import Codec, DecodeError


@dataclass(frozen=True)
class VerifyResult:
    partition: int
    checked: int
    broken: BrokenLink | None
    # Proofs split over several events (parts, pages) with a piece missing.
    incomplete: list[str] = field(default_factory=list)


def read_partition(
    consumer_config: dict[str, str],
    topic: str,
    partition: int,
    codec: Codec,
    clock: Clock,
    start: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, AuditEvent | DecodeError]]:
    consumer = Consumer(
        {**consumer_config, "group.id": "audit-verifier", "enable.auto.commit": False}
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        first, stop = max(start, low), high if end is None else min(end, high)
        if first >= stop:
            return
        consumer.assign([TopicPartition(topic, partition, first)])
        offset = first
        while offset < stop:
            msg = consumer.poll(5.0)
            if msg is None:
                raise TimeoutError(f"audit partition {partition} stalled at offset {offset}")
            msg_offset = msg.offset()
            if msg.error() or msg_offset is None:
                continue
            offset = msg_offset + 1
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
    """Verify offsets [start, end) of one partition; from offset 0 the chain starts at genesis."""
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
        broken = verify_chain(events(), key, ChainHead.genesis() if start == 0 else None)
    except _Undecodable as exc:
        broken = BrokenLink(exc.offset, None, f"record does not decode: {exc.reason}")
    return VerifyResult(partition, checked, broken, proofs.problems())


class _Undecodable(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
