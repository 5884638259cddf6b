"""The chain-head reader against a fake read_committed consumer.

A transactional partition ends in commit markers, and aborted records are
invisible to read_committed readers: offsets have gaps, and the high watermark
is not one past the last record. The reader must still find the last record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import agents.audit.heads as chain_heads
from agents.audit.chain import ChainHead, link
from agents.audit.heads import read_chain_head
from agents.clock import FakeClock
from agents.rules.context import AuditEntry
from agents.runtime.kafka_errors import is_transient
from schemas.audit import AuditEvent
from streams.codec import Codec

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CODEC = Codec()


class Msg:
    def __init__(self, offset: int | None, value: bytes | None, error: KafkaError | None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def offset(self) -> int | None:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error


class FakeConsumer:
    """Serves ``records`` (offset -> bytes) up to ``high``; then partition EOF."""

    records: dict[int, bytes] = {}
    high = 0
    low = 0
    # Errors poll() returns before the next record, in order.
    poll_errors: list[KafkaError] = []
    configs: list[dict[str, Any]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.configs.append(config)
        self.position = 0

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return self.low, self.high

    def assign(self, tps: list[Any]) -> None:
        self.position = tps[0].offset

    def poll(self, timeout: float) -> Msg:
        if self.poll_errors:
            return Msg(None, None, self.poll_errors.pop(0))
        following = sorted(o for o in self.records if o >= self.position)
        if not following:
            return Msg(None, None, KafkaError(KafkaError._PARTITION_EOF))
        offset = following[0]
        self.position = offset + 1
        return Msg(offset, self.records[offset], None)

    def close(self) -> None:
        pass


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    FakeConsumer.records, FakeConsumer.high, FakeConsumer.low = {}, 0, 0
    FakeConsumer.poll_errors, FakeConsumer.configs = [], []
    monkeypatch.setattr(chain_heads, "Consumer", FakeConsumer)
    return FakeConsumer


def events(n: int) -> list[AuditEvent]:
    head, out = ChainHead.genesis(), []
    for i in range(n):
        facts = AuditEntry(
            subject_id=f"cust-{i}",
            controller_id="smartcomms",
            rule_id="r",
            policy_version="p",
            decision="retention-scheduled",
            event_time=T0,
        )
        event = link(head, facts, partition=0, key=b"k", decided_at=T0)
        head = ChainHead.of(event)
        out.append(event)
    return out


def read(**kwargs: Any) -> ChainHead:
    return read_chain_head({}, "t.audit", 0, CODEC, FakeClock(T0), **kwargs)


def test_an_empty_partition_starts_at_genesis(consumer: type[FakeConsumer]) -> None:
    assert read() == ChainHead.genesis()
    assert consumer.configs[0]["isolation.level"] == "read_committed"


def test_the_head_is_the_last_record_before_the_commit_markers(
    consumer: type[FakeConsumer],
) -> None:
    chain = events(6)
    # Two transactions of three records, each followed by its commit marker.
    consumer.records = {o: CODEC.encode(e) for o, e in zip([0, 1, 2, 4, 5, 6], chain, strict=True)}
    consumer.high = 8
    assert read() == ChainHead.of(chain[-1])


def test_the_reader_looks_further_back_past_a_long_aborted_tail(
    consumer: type[FakeConsumer],
) -> None:
    chain = events(3)
    consumer.records = {o: CODEC.encode(e) for o, e in enumerate(chain)}
    # Offsets 3-999: an aborted transaction's records and markers, invisible.
    consumer.high = 1000
    assert read() == ChainHead.of(chain[-1])


def test_an_unreadable_tail_record_is_skipped_and_reported(
    consumer: type[FakeConsumer],
) -> None:
    chain = events(2)
    consumer.records = {0: CODEC.encode(chain[0]), 1: CODEC.encode(chain[1]), 2: b"\x00junk"}
    consumer.high = 3
    unreadable: list[int] = []
    assert read(on_unreadable=unreadable.append) == ChainHead.of(chain[1])
    assert unreadable == [2]


def test_transient_poll_errors_are_waited_out(consumer: type[FakeConsumer]) -> None:
    chain = events(1)
    consumer.records, consumer.high = {0: CODEC.encode(chain[0])}, 1
    consumer.poll_errors = [KafkaError(KafkaError._TRANSPORT), KafkaError(KafkaError._TIMED_OUT)]
    assert read() == ChainHead.of(chain[0])


def test_a_permanent_poll_error_is_raised(consumer: type[FakeConsumer]) -> None:
    consumer.records, consumer.high = {0: CODEC.encode(events(1)[0])}, 1
    consumer.poll_errors = [KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    with pytest.raises(KafkaException) as raised:
        read()
    assert not is_transient(raised.value)


def test_a_broker_failover_error_is_transient() -> None:
    # What the worker used to exit on: the writer retries these instead.
    for code in (KafkaError._TRANSPORT, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._TIMED_OUT):
        assert is_transient(KafkaException(KafkaError(code)))
    assert is_transient(TimeoutError("no answer"))
    assert not is_transient(KafkaException(KafkaError(KafkaError.PRODUCER_FENCED, fatal=True)))
