"""Publisher SDK and the publish/tail CLI against a real broker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from schemas.events import CallRecorded, ConsentGiven
from streams.cli import publish, tail
from streams.codec import Codec
from streams.publisher import Publisher, PublishError, producer_config
from streams.settings import Settings
from streams.topics import TopicNames

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
WAIT_S = 60.0


def _event(i: int, subject: str = "cust-1") -> ConsentGiven:
    return ConsentGiven(
        event_id=f"e-{i}",
        subject_id=subject,
        source_system="crm",
        event_time=NOW,
        purpose="newsletter",
    )


def _read_all(bootstrap: str, topic: str, group: str, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_publish_is_confirmed_keyed_and_decodable(
    kafka_bootstrap: str, new_topic: Any, group_id: str
) -> None:
    topic = new_topic("pub", partitions=4)
    with Publisher(kafka_bootstrap, Settings()) as publisher:
        first = publisher.publish(_event(0), topic=topic)
        rest = publisher.publish_many([_event(i, f"cust-{i % 3}") for i in range(1, 10)], topic)
    deliveries = [first, *rest]
    assert all(d.topic == topic for d in deliveries)
    assert first.key == b"cust-1"
    # Same subject, same partition (murmur2 keyed) and in order.
    same_subject = [d for d in deliveries if d.key == b"cust-1"]
    assert len({d.partition for d in same_subject}) == 1
    assert [d.offset for d in same_subject] == sorted(d.offset for d in same_subject)

    codec = Codec()
    messages = _read_all(kafka_bootstrap, topic, group_id, len(deliveries))
    got = {
        (m.partition(), m.offset()): codec.decode(m.value(), m.key(), now=datetime.now(UTC))
        for m in messages
    }
    assert got[(first.partition, first.offset)] == _event(0)
    assert len(got) == 10


def test_default_topic_is_the_source_systems_input_topic(
    kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    prefix = f"pubtest{int(time.time() * 1000)}"
    settings = Settings(topic_prefix=prefix)
    expected = TopicNames(prefix).input("crm")
    from streams.broker.admin import create_topic, delete_topics

    create_topic(kafka_admin, expected, partitions=1, replication_factor=-1, config=None)
    try:
        with Publisher(kafka_bootstrap, settings) as publisher:
            delivery = publisher.publish(_event(1))
        assert delivery.topic == expected
    finally:
        delete_topics(kafka_admin, [expected])


def test_unconfirmed_publish_raises(kafka_bootstrap: str) -> None:
    # A topic that does not exist (and is not auto-created) is never confirmed.
    publisher = Publisher(
        kafka_bootstrap,
        Settings(),
        timeout=3.0,
        extra_config={"message.timeout.ms": 2000, "allow.auto.create.topics": False},
    )
    with pytest.raises(PublishError, match="not delivered"):
        publisher.publish(_event(1), topic="no-such-topic-for-publisher-test")


def test_cli_publish_then_tail(
    kafka_bootstrap: str, new_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic("cli", partitions=2)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    runner = CliRunner()
    payload = {
        "event_id": "cli-1",
        "subject_id": "cust-9",
        "source_system": "telephony",
        "event_time": NOW.isoformat(),
        "recording_id": "rec-1",
        "system": "recorder",
    }
    result = runner.invoke(publish, ["call_recorded", json.dumps(payload), "--topic", topic])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip())
    assert printed["id"] == "cli-1"
    assert printed["topic"] == topic

    stdin_result = runner.invoke(
        publish,
        ["CallRecorded", "--topic", topic],
        input=json.dumps({**payload, "event_id": "cli-2"}),
    )
    assert stdin_result.exit_code == 0, stdin_result.output

    invalid = runner.invoke(publish, ["CallRecorded", json.dumps({**payload, "subject_id": "a b"})])
    assert invalid.exit_code != 0
    assert "subject_id" in invalid.output

    # A broken message to show how tail reports it.
    producer = Producer(producer_config(kafka_bootstrap, Settings()))
    producer.produce(topic, key=b"cust-9", value=b"garbage")
    assert producer.flush(WAIT_S) == 0

    tailed = runner.invoke(tail, [topic, "--from-beginning", "--max", "3", "--timeout", "20"])
    assert tailed.exit_code == 0, tailed.output
    lines = [json.loads(line) for line in tailed.output.splitlines()]
    assert len(lines) == 3
    decoded = [line for line in lines if "type" in line]
    assert sorted(line["value"]["event_id"] for line in decoded) == ["cli-1", "cli-2"]
    assert all(line["type"] == "CallRecorded" and line["key"] == "cust-9" for line in decoded)
    errors = [line for line in lines if "error" in line]
    assert errors == [
        {
            "topic": topic,
            "partition": errors[0]["partition"],
            "offset": errors[0]["offset"],
            "error": "bad_framing",
            "reason": errors[0]["reason"],
            "key": "Y3VzdC05",
            "value_base64": "Z2FyYmFnZQ==",
        }
    ]
    assert CallRecorded.model_validate(decoded[0]["value"]).subject_id == "cust-9"
