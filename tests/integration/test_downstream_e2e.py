"""The reference downstream consumer on the real broker: replays and unreadable commands.

No worker runs: the test plays the pipeline, writing commands to the CRM's
command topic and reading the acknowledgement and dead-letter topics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from agents.tools.downstream import DownstreamConsumer, ReferenceStore
from schemas.base import DataCategory
from schemas.commands import Action, Command, CommandAck
from schemas.deadletter import DeadLetter
from tests.integration.pipeline import Pipeline, pipelines, wait_for

SYSTEM = "crm"


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    yield from pipelines(kafka_bootstrap, tmp_path)  # topics only; no worker


def export(command_id: str, subject: str, attempt: int = 1) -> Command:
    now = datetime.now(UTC)
    return Command(
        command_id=command_id,
        action=Action.EXPORT,
        target_system=SYSTEM,
        subject_id=subject,
        controller_id="smartcomms",
        record_ids=["crm-1", "crm-2", "crm-3"],
        categories=[DataCategory.CORRESPONDENCE],
        rule_id="N11.portability",
        request_id="req-port-1",
        issued_at=now,
        deadline=now + timedelta(days=1),
        attempt=attempt,
        policy_version="t",
    )


def run(pipeline: Pipeline, store: ReferenceStore, group: str) -> DownstreamConsumer:
    return pipeline.run_downstream(SYSTEM, store=store, group_id=group)


def acks(pipeline: Pipeline, command_id: str, count: int) -> list[bytes]:
    """The raw acknowledgements for ``command_id`` once there are ``count`` of them."""
    found: list[bytes] = []

    def enough() -> bool:
        nonlocal found
        try:
            records = pipeline.read_raw(pipeline.names.acks)
        except KafkaException:  # a topic created a moment ago may not have its leader yet
            return False
        found = [
            value
            for _, _, key, value in records
            if isinstance(m := pipeline.codec.decode(value, key, now=datetime.now(UTC)), CommandAck)
            and m.command_id == command_id
        ]
        return len(found) >= count

    wait_for(enough, 60, f"{count} acknowledgement(s) of {command_id}")
    return found


def test_a_replayed_export_is_answered_in_full_and_done_once(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    store = ReferenceStore(tmp_path / "crm.sqlite")
    group = f"downstream-{uuid.uuid4().hex[:8]}"
    first = run(pipeline, store, group)
    command = export("cmd-export-1", "cust-port")
    topic = pipeline.names.command(SYSTEM)
    pipeline.publish_raw(topic, b"cust-port", pipeline.codec.encode(command))
    (original,) = acks(pipeline, command.command_id, 1)
    answer = pipeline.codec.decode(original, b"cust-port", now=datetime.now(UTC))
    assert isinstance(answer, CommandAck)
    assert [r.record_id for r in answer.exported] == ["crm-1", "crm-2", "crm-3"]

    # The pipeline re-sends the command (its acknowledgement was late).
    resent = export("cmd-export-1", "cust-port", attempt=2)
    pipeline.publish_raw(topic, b"cust-port", pipeline.codec.encode(resent))
    acks(pipeline, command.command_id, 2)

    # The consumer crashed before committing: a new one (same store, no committed
    # offsets) is delivered both again.
    first.stop()
    run(pipeline, ReferenceStore(tmp_path / "crm.sqlite"), f"{group}-after-crash")
    answers = acks(pipeline, command.command_id, 4)
    assert answers == [original] * 4  # the full original outcome, every time
    assert store.effects(command.command_id) == [
        ("export", "crm-1"),
        ("export", "crm-2"),
        ("export", "crm-3"),
    ]


def test_an_unreadable_command_is_dead_lettered_and_the_next_one_answered(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    run(pipeline, ReferenceStore(tmp_path / "crm.sqlite"), f"downstream-{uuid.uuid4().hex[:8]}")
    topic = pipeline.names.command(SYSTEM)
    pipeline.publish_raw(topic, b"cust-x", b"\xc3\x01not a command")
    after = export("cmd-after", "cust-y")
    pipeline.publish_raw(topic, b"cust-y", pipeline.codec.encode(after))

    acks(pipeline, after.command_id, 1)
    (letter,) = pipeline.wait_for_models(
        pipeline.names.dead_letter, DeadLetter, lambda ds: len(ds) >= 1, what="a dead letter"
    )
    assert letter.topic == topic
    assert letter.original_value == b"\xc3\x01not a command"
    assert letter.reason
