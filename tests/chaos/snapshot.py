"""Everything on a pipeline's topics, decoded: what the checks look at.

Reads each partition from its start to the high watermark seen when the read
began, with its own consumer (no group, nothing committed). Records that do
not decode are kept as such (an undecodable record on a pipeline topic is a
finding too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from confluent_kafka import Consumer, TopicPartition

from schemas.audit import AuditEvent
from schemas.base import Frozen
from schemas.commands import Command, CommandAck
from schemas.deadletter import DeadLetter
from schemas.events import INPUT_EVENTS, Event
from schemas.responses import RequestResponse
from streams.codec import Codec, DecodeError
from streams.topics import TopicNames

M = TypeVar("M", covariant=True)
# Reading gives up after this many empty one-second polls in a row.
STALL_POLLS = 30


@dataclass(frozen=True)
class At(Generic[M]):
    """A decoded record and where it is."""

    topic: str
    partition: int
    offset: int
    model: M
    raw: bytes = b""


@dataclass
class Snapshot:
    events: list[At[Event]] = field(default_factory=list)
    commands: list[At[Command]] = field(default_factory=list)
    acks: list[At[CommandAck]] = field(default_factory=list)
    responses: list[At[RequestResponse]] = field(default_factory=list)
    audit: list[At[AuditEvent]] = field(default_factory=list)
    dead_letters: list[At[DeadLetter]] = field(default_factory=list)
    undecodable: list[At[str]] = field(default_factory=list)
    read_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def read_snapshot(
    consumer_config: dict[str, str],
    names: TopicNames,
    systems: Iterable[str],
    partitions: int,
    codec: Codec,
) -> Snapshot:
    snapshot = Snapshot()
    expected: dict[str, tuple[type[Frozen], ...]] = {t: INPUT_EVENTS for t in names.inputs}
    expected |= {
        names.acks: (CommandAck,),
        names.audit: (AuditEvent,),
        names.responses: (RequestResponse,),
        names.dead_letter: (DeadLetter,),
    }
    expected |= {names.command(s): (Command,) for s in systems}
    now = datetime.now(UTC)
    for topic, partition, offset, value in _read_all(consumer_config, list(expected), partitions):
        try:
            model = codec.decode(value, None, now=now, expected=expected[topic], check_key=False)
        except DecodeError as exc:
            snapshot.undecodable.append(At(topic, partition, offset, str(exc)))
            continue
        _file(snapshot, At(topic, partition, offset, model, value))
    return snapshot


def _file(snapshot: Snapshot, item: At[Frozen]) -> None:
    model = item.model
    if isinstance(model, Event):
        snapshot.events.append(At(item.topic, item.partition, item.offset, model))
    elif isinstance(model, Command):
        snapshot.commands.append(At(item.topic, item.partition, item.offset, model))
    elif isinstance(model, CommandAck):
        snapshot.acks.append(At(item.topic, item.partition, item.offset, model))
    elif isinstance(model, RequestResponse):
        snapshot.responses.append(At(item.topic, item.partition, item.offset, model))
    elif isinstance(model, AuditEvent):
        # The raw bytes tell a byte-identical duplicate (a producer retry) apart.
        snapshot.audit.append(At(item.topic, item.partition, item.offset, model, item.raw))
    elif isinstance(model, DeadLetter):
        snapshot.dead_letters.append(At(item.topic, item.partition, item.offset, model))


def _read_all(
    consumer_config: dict[str, str], topics: list[str], partitions: int
) -> Iterable[tuple[str, int, int, bytes]]:
    consumer = Consumer(
        {
            **consumer_config,
            "group.id": "chaos-checker",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        starts: list[TopicPartition] = []
        for name in topics:
            for p in range(partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                if high > low:
                    ends[(name, p)] = high
                    starts.append(TopicPartition(name, p, low))
        if not starts:
            return
        consumer.assign(starts)
        idle = 0
        while ends:
            batch = consumer.consume(1000, timeout=1.0)
            idle = 0 if batch else idle + 1
            if idle >= STALL_POLLS:
                raise TimeoutError(f"reading stalled with {sorted(ends)[:3]}... unread")
            for msg in batch:
                if msg.error():
                    continue
                topic, part, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or part is None or offset is None:
                    continue
                end = ends.get((topic, part))
                value = msg.value()
                if end is not None and offset < end and value is not None:
                    yield topic, part, offset, value
            # The position, not the last record, says a partition is done: it moves
            # past control records (transaction markers) that are never delivered.
            remaining = [TopicPartition(t, p) for t, p in ends]
            for tp in consumer.position(remaining):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    del ends[(tp.topic, tp.partition)]
    finally:
        consumer.close()
