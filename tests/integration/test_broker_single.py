"""A real round trip through the session's broker (single node unless the env names one)."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, Message, Producer

from tests.integration.conftest import TopicFactory

MESSAGES = 20


def test_produce_then_consume_round_trip(
    kafka_bootstrap: str, new_topic: TopicFactory, group_id: str
) -> None:
    topic = new_topic("round-trip", partitions=3)
    sent = {f"subject-{i}".encode(): f"event-{i}".encode() for i in range(MESSAGES)}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    assert errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: dict[bytes, bytes] = {}
    try:
        consumer.subscribe([topic])
        # Bounded by polls, not wall-clock assertions: a generous ceiling only so
        # that a broken broker fails the test instead of hanging it.
        for _ in range(600):
            if len(received) == len(sent):
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got_key, got_value = msg.key(), msg.value()
            assert got_key is not None
            assert got_value is not None
            received[got_key] = got_value
    finally:
        consumer.close()
    assert received == sent
