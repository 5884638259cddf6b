"""Dead-letter path against a real broker: every broken message ends up on the
dead-letter topic with its original bytes and position; valid ones decode."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import INPUT_EVENTS, CallRecorded, ConsentGiven, ErasureRequested
from streams.codec import Codec
from streams.deadletter import DeadLetterSink, Decoded, decode_or_dead_letter
from streams.publisher import producer_config
from streams.settings import Settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WAIT_S = 60.0


def _events() -> list[Any]:
    base = {"source_system": "telephony", "event_time": NOW - timedelta(days=1)}
    return [
        CallRecorded(event_id="e-1", subject_id="cust-1", recording_id="r-1", system="rec", **base),
        ConsentGiven(event_id="e-2", subject_id="cust-2", purpose="newsletter", **base),
        ErasureRequested(event_id="e-3", subject_id="cust-3", request_id="req-3", **base),
    ]


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append(msg)
    finally:
        consumer.close()
    return out


def test_broken_messages_reach_the_dead_letter_topic(
    kafka_bootstrap: str, new_topic: Any, group_id: str
) -> None:
    source = new_topic("dl-source", partitions=3)
    dead_topic = new_topic("dl-dead", partitions=3)
    codec = Codec()
    valid = _events()
    good = codec.encode(valid[0])
    future = CallRecorded.model_construct(
        **{**valid[0].model_dump(), "event_time": NOW + timedelta(days=5)}
    )
    broken: list[tuple[bytes | None, bytes | None, ReasonClass]] = [
        (b"cust-1", b"not avro at all", ReasonClass.BAD_FRAMING),
        (b"cust-1", good[:-3], ReasonClass.TRUNCATED),
        (b"cust-1", good[:6], ReasonClass.TRUNCATED),
        (b"cust-1", good[:2] + b"\xff" * 8 + good[10:], ReasonClass.UNKNOWN_SCHEMA),
        (b"cust-1", good + b"\x00\x01", ReasonClass.INVALID_AVRO),
        (b"someone-else", good, ReasonClass.KEY_MISMATCH),
        (None, good, ReasonClass.MISSING_KEY),
        (b"cust-1", None, ReasonClass.BAD_FRAMING),
        (b"cust-1", codec.encode(future), ReasonClass.INVALID_MODEL),
    ]
    to_send: list[tuple[bytes | None, bytes | None]] = [
        (codec.key_for(e), codec.encode(e)) for e in valid
    ]
    to_send += [(k, v) for k, v, _ in broken]

    positions: dict[int, tuple[int, int]] = {}
    producer = Producer(producer_config(kafka_bootstrap, Settings()))
    for index, (key, value) in enumerate(to_send):

        def done(err: Any, msg: Message, index: int = index) -> None:
            assert err is None, err
            positions[index] = (int(msg.partition() or 0), int(msg.offset() or 0))

        producer.produce(source, value=value, key=key, on_delivery=done)
    assert producer.flush(WAIT_S) == 0
    assert len(positions) == len(to_send)

    # The consumer side: decode or dead-letter, send dead letters to the sink.
    sink = DeadLetterSink(kafka_bootstrap, Settings(), codec=codec, topic=dead_topic)
    counted: list[str] = []
    decoded: list[Decoded] = []
    for msg in _consume(kafka_bootstrap, source, group_id, len(to_send)):
        result = decode_or_dead_letter(
            msg.key(),
            msg.value(),
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            NOW,
            codec=codec,
            expected=INPUT_EVENTS,
            on_dead_letter=counted.append,
        )
        if isinstance(result, DeadLetter):
            sink.send(result)
        else:
            decoded.append(result)
    sink.close()

    assert sorted(d.model.event_id for d in decoded) == ["e-1", "e-2", "e-3"]  # type: ignore[attr-defined]
    for d in decoded:
        original = next(e for e in valid if e.event_id == d.model.event_id)  # type: ignore[attr-defined]
        assert d.model == original
    assert sorted(counted) == sorted(c.value for _, _, c in broken)

    dead_messages = _consume(kafka_bootstrap, dead_topic, group_id + "-dl", len(broken))
    assert len(dead_messages) == len(broken)
    by_position: dict[tuple[int, int], tuple[DeadLetter, bytes | None]] = {}
    for msg in dead_messages:
        letter = codec.decode(msg.value(), msg.key(), now=NOW, expected=(DeadLetter,))
        assert isinstance(letter, DeadLetter)
        assert letter.topic == source
        by_position[(letter.partition, letter.offset)] = (letter, msg.key())
    for index, (key, value, reason_class) in enumerate(broken, start=len(valid)):
        letter, dl_key = by_position[positions[index]]
        assert letter.original_value == value
        assert letter.original_key == key
        assert dl_key == key
        assert letter.reason_class is reason_class
        assert letter.failed_at == NOW
        assert letter.original_value_size == (len(value) if value is not None else None)
