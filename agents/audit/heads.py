"""Where an audit partition's hash chain ends, read from the audit topic itself.

The topic is the truth: a new owner of a partition (after a rebalance or a
crash) continues from the last record anyone managed to commit there, so the
chain does not fork. ``agents.audit.writer`` calls this only after it has
fenced every earlier writer of the partition, and reads with
``isolation.level=read_committed``: records of an aborted transaction (a
fenced writer's, or one a crash cut short) are not part of the chain and are
never seen.

The end of a transactional partition is a commit marker, not a record, so the
reader cannot simply read the record before the high watermark: it reads the
tail in windows growing backwards until one holds a record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from agents.audit.chain import ChainHead
from agents.clock import Clock
from agents.runtime.kafka_errors import is_transient_error
from schemas.audit import AuditEvent
from streams.codec import Codec, DecodeError

log = logging.getLogger(__name__)

# The last transaction of a partition is one batch of a partition's audit
# events plus its marker: usually well inside the first window.
FIRST_WINDOW = 64
WINDOW_GROWTH = 8
POLL_S = 0.5
# Bounds one window's read; running into it raises TimeoutError (transient).
MAX_EMPTY_POLLS = 60
WATERMARK_TIMEOUT_S = 10.0
FETCH_WAIT_MS = 10


def read_committed_config(consumer_config: dict[str, str]) -> dict[str, str | bool | int]:
    """A consumer for reading the audit topic: committed records only, no group."""
    return {
        **consumer_config,
        # Required by librdkafka; the reader assigns partitions and never joins or commits.
        "group.id": "audit-head-reader",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        # Ends a read at the last stable offset instead of waiting for more.
        "enable.partition.eof": True,
        # The end is only seen in a fetch answered empty, which the broker holds for
        # this long (default 500 ms): each read of a partition's head, on every
        # assignment, would wait that long at least once or twice.
        "fetch.wait.max.ms": FETCH_WAIT_MS,
    }


def read_chain_head(
    consumer_config: dict[str, str],
    topic: str,
    partition: int,
    codec: Codec,
    clock: Clock,
    *,
    on_unreadable: Callable[[int], None] = lambda offset: None,
) -> ChainHead:
    """The head of ``partition``'s chain: its last committed audit event, or genesis.

    A record at the tail that does not decode is skipped (``on_unreadable`` is
    told its offset) rather than stopping the partition for good: the chain
    continues from the last readable event, and ``lifecycle audit verify``
    names the unreadable record. Kafka errors, ``TimeoutError`` and an
    unreachable schema registry (``RegistryUnavailable``) are raised for the
    caller to classify and retry.
    """
    consumer = Consumer(read_committed_config(consumer_config))
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S
        )
        end, window = high, FIRST_WINDOW
        while end > low:
            begin = max(low, end - window)
            last = _last_event(consumer, topic, partition, begin, end, codec, clock, on_unreadable)
            if last is not None:
                return ChainHead.of(last)
            end, window = begin, window * WINDOW_GROWTH
        return ChainHead.genesis()
    finally:
        consumer.close()


def _last_event(
    consumer: Consumer,
    topic: str,
    partition: int,
    begin: int,
    end: int,
    codec: Codec,
    clock: Clock,
    on_unreadable: Callable[[int], None],
) -> AuditEvent | None:
    """The last audit event committed at an offset in [begin, end), if any."""
    consumer.assign([TopicPartition(topic, partition, begin)])
    last: AuditEvent | None = None
    empty_polls = 0
    while True:
        msg = consumer.poll(POLL_S)
        error = None if msg is None else msg.error()
        if error is not None and error.code() == KafkaError._PARTITION_EOF:
            return last
        if error is not None and not is_transient_error(error):
            raise KafkaException(error)
        if msg is None or error is not None:
            # Nothing yet, or a connection/leader problem librdkafka is retrying.
            empty_polls += 1
            if empty_polls >= MAX_EMPTY_POLLS:
                raise TimeoutError(f"audit partition {partition}: no answer reading its tail")
            continue
        offset = msg.offset()
        if offset is None or offset >= end:
            return last
        try:
            event = codec.decode(
                msg.value(), None, now=clock.now(), expected=(AuditEvent,), check_key=False
            )
        except DecodeError as exc:
            log.error(
                "audit partition %d: record at offset %d does not decode (%s); the chain "
                "continues from the last readable event",
                partition,
                offset,
                exc.reason_class.value,
            )
            on_unreadable(offset)
            continue
        assert isinstance(event, AuditEvent)
        last = event
