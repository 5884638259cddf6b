"""Publisher configuration and CLI helpers (no broker needed)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import click
import pytest

from schemas.commands import Command
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import CallRecorded, MarketingOptOutReceived
from streams.cli import jsonable, model_for, render
from streams.deadletter import Decoded
from streams.publisher import Publisher, PublishError, producer_config
from streams.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_producer_config_is_idempotent_and_murmur2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LIFECYCLE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("LIFECYCLE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("LIFECYCLE_KAFKA_SASL_PASSWORD", "pw")
    config = producer_config("broker:9092", Settings())
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["partitioner"] == "murmur2_random"
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "svc"


def test_default_topic() -> None:
    publisher = Publisher("127.0.0.1:1", Settings(topic_prefix="t1"))
    event = MarketingOptOutReceived(
        event_id="e", subject_id="s", source_system="marketing", event_time=NOW, channels=["all"]
    )
    assert publisher.default_topic(event) == "t1.in.marketing"
    command = Command(
        command_id="c",
        action="delete",
        target_system="crm",
        subject_id="s",
        controller_id="smartcomms",
        rule_id="r",
        issued_at=NOW,
        deadline=NOW,
        policy_version="1",
    )
    with pytest.raises(PublishError, match="no default topic"):
        publisher.default_topic(command)


@pytest.mark.parametrize(
    "name", ["CallRecorded", "callrecorded", "call_recorded", " CALL_RECORDED "]
)
def test_model_names(name: str) -> None:
    assert model_for(name) is CallRecorded


def test_unknown_model_name() -> None:
    with pytest.raises(click.BadParameter, match="CallRecorded"):
        model_for("CallDeleted")


def test_jsonable() -> None:
    value = {"b": b"\xff\x00", "t": NOW, "e": ReasonClass.OVERSIZE, "l": [1, None]}
    assert jsonable(value) == {
        "b": base64.b64encode(b"\xff\x00").decode(),
        "t": "2026-06-01T00:00:00+00:00",
        "e": "oversize",
        "l": [1, None],
    }


def _letter() -> DeadLetter:
    return DeadLetter(
        topic="x.in.crm",
        partition=1,
        offset=9,
        original_key=b"k",
        original_value=b"\x01",
        reason_class=ReasonClass.TRUNCATED,
        reason="cut",
        failed_at=NOW,
    )


def test_render_undecodable_and_dead_letter_records() -> None:
    assert render(_letter()) == {
        "topic": "x.in.crm",
        "partition": 1,
        "offset": 9,
        "error": "truncated",
        "reason": "cut",
        "key": "aw==",
        "value_base64": "AQ==",
    }
    shown = render(Decoded(_letter(), None, "x.dead-letter", 0, 3))
    assert shown["type"] == "DeadLetter"
    assert shown["dead_letter"] == {
        "reason_class": "truncated",
        "failure_class": None,
        "reason": "cut",
        "source": "x.in.crm/1@9",
    }
    assert shown["value"]["original_value"] == "AQ=="
    parked = _letter().model_copy(update={"failure_class": FailureClass.UNKNOWN_TOPIC})
    shown = render(Decoded(parked, None, "x.dead-letter", 0, 4))
    assert shown["dead_letter"]["failure_class"] == "unknown_topic"


def test_publish_restored_announces_the_backup_time_on_the_restores_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from schemas.internal import SystemRestored
    from streams.publisher import Delivery

    publisher = Publisher("127.0.0.1:1", Settings(topic_prefix="t1"))
    sent: list[tuple[object, str | None]] = []

    def capture(message: object, topic: str | None = None) -> Delivery:
        sent.append((message, topic))
        return Delivery(topic or "", 0, 0, None)

    monkeypatch.setattr(publisher, "publish", capture)
    publisher.publish_restored("crm", NOW, restore_id="restore-7", restored_at=NOW)
    [(event, topic)] = sent
    assert topic == "t1.restores"
    assert event == SystemRestored(
        restore_id="restore-7", system="crm", backup_taken_at=NOW, restored_at=NOW
    )
