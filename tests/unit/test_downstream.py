"""The reference downstream consumer's core without Kafka: replies, idempotency, atomicity."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from agents.tools.downstream import (
    Behaviour,
    CommandProcessor,
    ReferenceStore,
    commit_or_leave_for_redelivery,
    consumer_config,
)
from schemas.base import DataCategory
from schemas.commands import AckOutcome, Action, Command, CommandAck
from schemas.deadletter import ReasonClass
from streams.codec import Codec
from streams.settings import Settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CODEC = Codec()
TOPIC = "t.cmd.crm"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def command(action: Action = Action.EXPORT, command_id: str = "cmd-1", attempt: int = 1) -> Command:
    return Command(
        command_id=command_id,
        action=action,
        target_system="crm",
        subject_id="cust-1",
        controller_id="smartcomms",
        record_ids=["r-1", "r-2"],
        categories=[DataCategory.CORRESPONDENCE],
        rule_id="N11",
        request_id="req-1",
        issued_at=T0,
        deadline=T0 + timedelta(days=1),
        attempt=attempt,
        policy_version="t",
    )


@pytest.fixture
def store(tmp_path: Path) -> ReferenceStore:
    return ReferenceStore(tmp_path / "crm.sqlite")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def processor(
    store: ReferenceStore, clock: Clock, behaviour: Behaviour | None = None
) -> CommandProcessor:
    return CommandProcessor(
        system="crm", codec=CODEC, store=store, behaviour=behaviour or Behaviour(), clock=clock
    )


def deliver(p: CommandProcessor, c: Command, offset: int = 0) -> tuple[bytes, bool]:
    reply = p.process(c.subject_id.encode(), CODEC.encode(c), TOPIC, 0, offset)
    assert reply.dead_letter is None
    assert reply.ack is not None
    assert reply.ack_key == c.subject_id.encode()
    return reply.ack, reply.replayed


def ack_of(data: bytes) -> CommandAck:
    ack = CODEC.decode(data, b"cust-1", now=T0 + timedelta(days=2), expected=(CommandAck,))
    assert isinstance(ack, CommandAck)
    return ack


def test_a_replayed_export_is_answered_with_its_records(
    store: ReferenceStore, clock: Clock
) -> None:
    p = processor(store, clock)
    first, replayed = deliver(p, command())
    assert not replayed
    exported = ack_of(first).exported
    assert [r.record_id for r in exported] == ["r-1", "r-2"]

    clock.now += timedelta(hours=1)
    # Redelivered (offset not committed) and re-sent by the pipeline (attempt 2).
    again, replayed = deliver(p, command())
    resent, _ = deliver(p, command(attempt=2), offset=1)
    assert replayed
    assert again == first
    assert resent == first
    # Carried out once.
    assert store.effects("cmd-1") == [("export", "r-1"), ("export", "r-2")]


def test_the_store_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    first, _ = deliver(processor(ReferenceStore(tmp_path / "s.sqlite"), clock), command())
    reopened = ReferenceStore(tmp_path / "s.sqlite")
    again, replayed = deliver(processor(reopened, clock), command())
    assert (again, replayed) == (first, True)


def _refuse_inserts_into(store: ReferenceStore, table: str) -> None:
    db = sqlite3.connect(store.path)
    db.execute(
        f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    db.commit()
    db.close()


@pytest.mark.parametrize("failing", ["outcomes", "effects"])
def test_acting_and_recording_are_one_transaction(
    store: ReferenceStore, clock: Clock, failing: str
) -> None:
    p = processor(store, clock)
    _refuse_inserts_into(store, failing)
    with pytest.raises(sqlite3.IntegrityError):
        deliver(p, command(Action.DELETE))
    # Neither the effect nor the record: the redelivered command is done then.
    assert store.effects("cmd-1") == []
    assert store.recorded("cmd-1") is None

    db = sqlite3.connect(store.path)
    db.execute(f"DROP TRIGGER refuse_{failing}")
    db.commit()
    db.close()
    ack, replayed = deliver(p, command(Action.DELETE))
    assert not replayed
    assert ack_of(ack).outcome is AckOutcome.DONE
    assert store.effects("cmd-1") == [("delete", "r-1"), ("delete", "r-2")]
    recorded = store.recorded("cmd-1")
    assert recorded is not None
    assert recorded.ack == ack


def test_a_failed_command_is_tried_again(store: ReferenceStore, clock: Clock) -> None:
    failing = processor(store, clock, Behaviour(fail_actions=frozenset({Action.DELETE})))
    first, _ = deliver(failing, command(Action.DELETE))
    assert ack_of(first).outcome is AckOutcome.FAILED
    assert store.effects("cmd-1") == []
    second, replayed = deliver(processor(store, clock), command(Action.DELETE))
    assert not replayed
    assert ack_of(second).outcome is AckOutcome.DONE
    assert store.effects("cmd-1") == [("delete", "r-1"), ("delete", "r-2")]


def test_an_unreadable_command_is_dead_lettered_not_acted_on(
    store: ReferenceStore, clock: Clock
) -> None:
    reply = processor(store, clock).process(b"cust-1", b"\x00garbage", TOPIC, 2, 41)
    assert reply.ack is None
    assert reply.dead_letter is not None
    assert reply.dead_letter.reason_class is ReasonClass.UNKNOWN_SCHEMA  # 0x00 framing, no registry
    assert (reply.dead_letter.topic, reply.dead_letter.partition) == (TOPIC, 2)
    assert reply.dead_letter.offset == 41
    assert reply.dead_letter.original_value == b"\x00garbage"
    assert store.count() == 0


def test_a_command_under_another_key_is_dead_lettered(store: ReferenceStore, clock: Clock) -> None:
    reply = processor(store, clock).process(b"cust-2", CODEC.encode(command()), TOPIC, 0, 0)
    assert reply.dead_letter is not None
    assert reply.dead_letter.reason_class is ReasonClass.KEY_MISMATCH


def test_a_silent_system_answers_nothing(store: ReferenceStore, clock: Clock) -> None:
    reply = processor(store, clock, Behaviour(silent=True)).process(
        b"cust-1", CODEC.encode(command()), TOPIC, 0, 0
    )
    assert (reply.ack, reply.dead_letter) == (None, None)


def test_a_store_from_before_acks_were_kept_still_answers(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE outcomes (command_id TEXT PRIMARY KEY, action TEXT,"
        " outcome TEXT, reason TEXT, export_reference TEXT, done_at TEXT)"
    )
    db.execute(
        "INSERT INTO outcomes VALUES ('cmd-1', 'delete', 'done', NULL, NULL, ?)",
        (T0.isoformat(),),
    )
    db.commit()
    db.close()
    ack, replayed = deliver(processor(ReferenceStore(path), clock), command(Action.DELETE))
    assert replayed
    assert ack_of(ack).outcome is AckOutcome.DONE


def test_a_crashed_consumers_commands_move_on_within_the_workers_session_timeout() -> None:
    # A consumer killed without leaving its group holds its partitions until its
    # session expires; librdkafka's default (45 s) held a restarted system's commands
    # back that long. Workers give up a dead member's partitions after 10 s.
    config = consumer_config("crm", "127.0.0.1:1", Settings(topic_prefix="t1"))
    assert int(config["session.timeout.ms"]) <= 10_000
    assert config["group.id"] == "t1.downstream.crm"
    assert config["enable.auto.commit"] is False  # committed only after the ack is sent


def _failing(code: int) -> Callable[[], object]:
    def commit() -> object:
        raise KafkaException(KafkaError(code))

    return commit


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.UNKNOWN_MEMBER_ID,  # seen in a chaos run: the consumer exited with 1
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
    ],
)
def test_a_commit_the_group_moved_past_leaves_the_command_for_redelivery(code: int) -> None:
    # The acknowledgement is already sent; the command comes again to the partition's
    # owner, which answers it from its record. The consumer must not exit over it.
    assert commit_or_leave_for_redelivery(_failing(code)) is False


def test_a_commit_error_that_does_not_heal_still_stops_the_consumer() -> None:
    with pytest.raises(KafkaException):
        commit_or_leave_for_redelivery(_failing(KafkaError.GROUP_AUTHORIZATION_FAILED))
    assert commit_or_leave_for_redelivery(lambda: None) is True


def _send(proc: CommandProcessor, cmd: Command) -> CommandAck:
    reply = proc.process(b"cust-1", CODEC.encode(cmd), TOPIC, 0, 0)
    assert reply.ack is not None
    ack = CODEC.decode(reply.ack, b"cust-1", now=T0 + timedelta(days=2), expected=(CommandAck,))
    assert isinstance(ack, CommandAck)
    return ack


def _held_data(store: ReferenceStore) -> None:
    store.hold("cust-1", "r-1", "Ann Example, 07700 900123")
    store.hold("cust-1", "r-2", "ann@example.com")
    store.hold("cust-2", "r-9", "someone else")


def test_a_delete_removes_the_subjects_records_only(store: ReferenceStore, clock: Clock) -> None:
    _held_data(store)
    assert _send(processor(store, clock), command(Action.DELETE)).outcome is AckOutcome.DONE
    assert store.held("cust-1") == {}
    assert store.held("cust-2") == {"r-9": "someone else"}


def test_a_restore_brings_back_data_and_forgets_later_outcomes(
    store: ReferenceStore, clock: Clock, tmp_path: Path
) -> None:
    _held_data(store)
    backup = tmp_path / "backup.sqlite"
    store.snapshot(backup, T0)
    proc = processor(store, clock)
    _send(proc, command(Action.DELETE))
    assert store.restore(backup) == T0
    assert set(store.held("cust-1")) == {"r-1", "r-2"}
    assert store.recorded("cmd-1") is None  # the idempotency record is from after the backup
    # The same command id, re-sent, deletes again.
    _send(proc, command(Action.DELETE))
    assert store.held("cust-1") == {}


def test_a_replayed_delete_acts_again_even_if_its_id_is_remembered(
    store: ReferenceStore, clock: Clock
) -> None:
    proc = processor(store, clock)
    _send(proc, command(Action.DELETE))
    _held_data(store)  # the data came back, the idempotency store did not go back
    plain = command(Action.DELETE)
    _send(proc, plain)
    assert set(store.held("cust-1")) == {"r-1", "r-2"}  # an ordinary resend is answered only
    replayed = plain.model_copy(update={"parameters": {"replay-of": "restore-1"}})
    assert _send(proc, replayed).command_id == "cmd-1"
    assert store.held("cust-1") == {}


def test_restore_refuses_a_file_that_is_not_a_snapshot(
    store: ReferenceStore, tmp_path: Path
) -> None:
    other = ReferenceStore(tmp_path / "other.sqlite")
    other.close()
    with pytest.raises(ValueError, match="not a snapshot"):
        store.restore(tmp_path / "other.sqlite")


def test_backup_commands_take_and_restore_a_store(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agents.cli import main

    path, backup = tmp_path / "crm.sqlite", tmp_path / "crm-backup.sqlite"
    store = ReferenceStore(path)
    store.hold("cust-1", "r-1", "Ann Example")
    runner = CliRunner()
    take = ["downstream-backup", "take", "--system", "crm", "--store", str(path)]
    taken = runner.invoke(main, [*take, "--out", str(backup)])
    assert taken.exit_code == 0, taken.output
    store.hold("cust-2", "r-2", "added after the backup")
    other = sqlite3.connect(path)  # the system deletes cust-1 by its own means
    with other:
        other.execute("DELETE FROM holdings WHERE subject_id = 'cust-1'")
    other.close()
    assert store.held("cust-1") == {}
    restore = ["downstream-backup", "restore", "--system", "crm", "--store", str(path)]
    restored = runner.invoke(main, [*restore, "--from", str(backup), "--no-announce"])
    assert restored.exit_code == 0, restored.output
    assert "crm restored to its backup of" in restored.output
    assert store.held("cust-1") == {"r-1": "Ann Example"}
    assert store.held("cust-2") == {}
