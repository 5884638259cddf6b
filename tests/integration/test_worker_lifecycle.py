"""The worker end to end on a real broker: events in, commands out, acks back, audit written."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from agents.audit.chain import ChainHead, verify_chain
from agents.store import keys
from schemas.audit import AuditEvent
from schemas.commands import Action, Command
from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import CallRecorded, LegalHoldPlaced, LegalHoldReleased
from tests.integration.events import call_recorded
from tests.integration.pipeline import Pipeline, pipelines, wait_for


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline of its own, for a test that stops or kills its worker."""
    yield from pipelines(kafka_bootstrap, tmp_path)


@pytest.fixture(scope="module")
def running(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One started worker (and the call recorder answering) shared by the tests that
    leave it running; each uses subjects of its own, so they never see each other's."""
    workdir = tmp_path_factory.mktemp("worker-lifecycle")
    for pipeline in pipelines(kafka_bootstrap, workdir):
        pipeline.start()
        pipeline.run_downstream("call-recorder")
        yield pipeline


def recording(subject: str, recorded_at: datetime, n: int = 1) -> CallRecorded:
    return call_recorded(
        subject, f"rec-{subject}-{n}", event_id=f"ev-{subject}-{n}", when=recorded_at
    )


def deletes_for(pipeline: Pipeline, record_id: str) -> list[Command]:
    return [
        c
        for c in pipeline.models(pipeline.names.command("call-recorder"), Command)
        if c.action is Action.DELETE and record_id in c.record_ids
    ]


def test_recording_deleted_at_30_days_acknowledged_and_audited(running: Pipeline) -> None:
    pipeline = running
    # Recorded 30 days ago minus a few seconds: due a few seconds from now.
    due = datetime.now(UTC) + timedelta(seconds=4)
    event = recording("cust-n7", due - timedelta(days=30))
    pipeline.publish(event)

    wait_for(
        lambda: deletes_for(pipeline, event.recording_id) != [],
        60,
        "delete command for the recording",
        alive=pipeline.process,
    )
    command = deletes_for(pipeline, event.recording_id)[0]
    assert command.record_ids == [event.recording_id]
    assert command.rule_id == "N7.call-recordings"
    assert command.issued_at >= due.replace(microsecond=due.microsecond // 1000 * 1000)

    audit = pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(
            e.decision == "command-completed" and command.command_id in e.command_ids_out
            for e in es
        ),
        what="acknowledgement closing the command",
    )
    decisions = [e.decision for e in audit if command.command_id in e.command_ids_out]
    assert "retention-delete" in decisions
    assert all(e.subject_ref != event.subject_id for e in audit)
    by_partition: dict[int, list[tuple[int, AuditEvent]]] = {}
    for partition, offset, model in pipeline.read(pipeline.names.audit):
        by_partition.setdefault(partition, []).append((offset, model))
    for events in by_partition.values():
        key = pipeline.settings.audit_hmac_key.get_secret_value().encode()
        assert verify_chain(events, key, ChainHead.genesis()) is None


def test_bad_input_is_dead_lettered_and_the_worker_carries_on(running: Pipeline) -> None:
    pipeline = running
    topic = pipeline.names.input("telephony")
    pipeline.publish_raw(topic, b"cust-bad", b"\xc3\x01not avro at all")
    pipeline.publish_raw(topic, None, b"garbage")
    good = recording("cust-good", datetime.now(UTC) - timedelta(days=1))
    pipeline.publish(good)

    dead = pipeline.wait_for_models(
        pipeline.names.dead_letter, DeadLetter, lambda ds: len(ds) >= 2, what="two dead letters"
    )
    assert {d.original_value for d in dead} == {b"\xc3\x01not avro at all", b"garbage"}
    assert all(d.topic == topic and d.reason for d in dead)
    assert ReasonClass.BAD_FRAMING in {d.reason_class for d in dead}
    pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(good.event_id in e.event_ids_in for e in es),
        what="the valid event processed after the broken ones",
    )
    assert pipeline.process is not None
    assert pipeline.process.poll() is None


def test_hold_blocks_deletion_until_released(running: Pipeline) -> None:
    pipeline = running
    event = recording("cust-hold", datetime.now(UTC) - timedelta(days=31))
    hold = LegalHoldPlaced(
        event_id="ev-hold-1",
        subject_id=event.subject_id,
        source_system="privacy-desk",
        event_time=datetime.now(UTC) - timedelta(days=31, seconds=-1),
        hold_id="hold-1",
        reason="litigation",
        case_reference="CASE-1",
    )
    pipeline.publish(hold)
    pipeline.publish(event)
    pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(event.event_id in e.event_ids_in for e in es),
        what="recording registered",
    )
    assert deletes_for(pipeline, event.recording_id) == []

    pipeline.publish(
        LegalHoldReleased(
            event_id="ev-hold-2",
            subject_id=event.subject_id,
            source_system="privacy-desk",
            event_time=datetime.now(UTC),
            hold_id="hold-1",
        )
    )
    wait_for(
        lambda: len(deletes_for(pipeline, event.recording_id)) > 0,
        60,
        "overdue recording deleted once the hold is released",
    )


def test_scheduled_items_survive_sigkill_and_never_fire_early(pipeline: Pipeline) -> None:
    pipeline.start()
    due = datetime.now(UTC) + timedelta(seconds=25)
    events = [recording(f"cust-k{i}", due - timedelta(days=30), i) for i in range(5)]
    for event in events:
        pipeline.publish(event)
    pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: sum(e.decision == "retention-scheduled" for e in es) >= len(events),
        what="all recordings scheduled",
    )
    pipeline.kill()
    assert all(deletes_for(pipeline, e.recording_id) == [] for e in events)

    pipeline.start()
    wait_for(
        lambda: all(deletes_for(pipeline, e.recording_id) for e in events),
        90,
        "every scheduled deletion fired after the restart",
    )
    for event in events:
        commands = deletes_for(pipeline, event.recording_id)
        # Redelivery may repeat a command, but always under the same id.
        assert len({c.command_id for c in commands}) == 1
        assert all(c.issued_at >= due - timedelta(milliseconds=1) for c in commands)
    assert pipeline.stop(signal.SIGTERM) == 0


def test_state_changelogs_are_compacted_within_a_bound(running: Pipeline) -> None:
    pipeline = running
    # Erased subjects' states must not linger in the pipeline's own topics.
    admin = AdminClient({"bootstrap.servers": pipeline.bootstrap, **pipeline.client_config})
    # One table holds every subject's entries (docs/state.md).
    for table in ("subjects",):
        resource = ConfigResource(ConfigResource.Type.TOPIC, f"{pipeline.prefix}-{table}-changelog")
        config = admin.describe_configs([resource])[resource].result()
        assert config["cleanup.policy"].value == "compact"
        assert int(config["max.compaction.lag.ms"].value) <= 86_400_000
        assert int(config["delete.retention.ms"].value) <= 86_400_000


def test_state_is_written_to_the_partition_of_its_subjects_events(running: Pipeline) -> None:
    pipeline = running
    # Batches mix partitions; every subject's state must still land in its own
    # partition of the changelog, or it would move to the wrong worker on rebalance.
    subjects = [f"cust-part-{i}" for i in range(40)]
    pipeline.publish_many([recording(s, datetime.now(UTC) - timedelta(days=1)) for s in subjects])
    changelog = f"{pipeline.prefix}-subjects-changelog"
    input_partition: dict[bytes, int] = {}
    state_partition: dict[bytes, int] = {}

    def collect() -> bool:
        input_partition.update(pipeline.raw_keys(pipeline.names.input("telephony")))
        for key, partition in pipeline.raw_keys(changelog).items():
            subject = keys.subject_of(key)
            if subject is not None:
                # Every entry of a subject (header, records, indexes) in one partition.
                assert state_partition.setdefault(subject.encode(), partition) == partition
        return all(s.encode() in state_partition for s in subjects)

    wait_for(collect, 60, "every subject's state in the changelog")
    assert len({input_partition[s.encode()] for s in subjects}) == pipeline.partitions
    for subject in subjects:
        key = subject.encode()
        assert state_partition[key] == input_partition[key], subject
