"""Reference consumer for downstream stores.

What every system holding personal data must do with the pipeline's
commands, in runnable form: read its own command topic, carry the command out,
reply on the acknowledgement topic, and only then commit the offset.

* **Idempotent by command id.** A redelivered or re-sent command is answered
  again with the acknowledgement first sent for it, byte for byte (an
  export's records included), never carried out twice.
* **Acting and recording are one transaction.** The effect on the system's
  data, the idempotency record and the acknowledgement to send are written in
  one SQLite transaction; the acknowledgement is sent after it commits, and
  the offset committed after the broker has the acknowledgement. A crash in
  between leaves either nothing (the command is done on redelivery) or all of
  it (the stored acknowledgement is sent on redelivery).
* **A DELETE re-sent after a restore** (parameter ``replay-of``, same command
  id) is carried out again even if its id is remembered: the data may be back
  while the idempotency record is not (docs/own-data.md). ``snapshot`` and
  ``restore`` stand for the system's backups (data and idempotency records).
* **Unreadable commands are dead-lettered**, with the reason, to
  ``<prefix>.dead-letter`` before their offset is committed.

The "store" here is a small SQLite file that records what was done, which is
enough for tests and the demo; a real system replaces ``apply`` and
``ReferenceStore._act`` with its own deletion, suppression or export, in the
same transaction as the record.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from agents.rules.ledger import REPLAY_OF
from agents.runtime.kafka_errors import is_transient_error, kafka_error
from schemas.commands import AckOutcome, Action, Command, CommandAck, ExportedRecord
from schemas.deadletter import DeadLetter
from streams.codec import Codec
from streams.deadletter import DeadLetterSink, decode_or_dead_letter, log_dead_letter
from streams.settings import Settings
from streams.topics import MURMUR2_PARTITIONER, TopicNames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Behaviour:
    """Test and demo knobs: which actions fail, whether to answer at all."""

    fail_actions: frozenset[Action] = frozenset()
    silent: bool = False


@dataclass(frozen=True)
class Recorded:
    """The outcome recorded for a command id."""

    outcome: AckOutcome
    reason: str | None
    export_reference: str | None
    # The acknowledgement as sent; None for a record kept before acks were stored.
    ack: bytes | None


@dataclass
class ReferenceStore:
    """Outcomes by command id, in SQLite so a restart keeps idempotency.

    ``effects`` stands for the system's own data: what each command did to it.
    """

    path: Path
    _db: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outcomes (command_id TEXT PRIMARY KEY, action TEXT,"
                " outcome TEXT, reason TEXT, export_reference TEXT, done_at TEXT)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outcomes)")}
            if "ack" not in columns:  # a store from before acks were kept
                self._db.execute("ALTER TABLE outcomes ADD COLUMN ack BLOB")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS effects (command_id TEXT, action TEXT,"
                " record_id TEXT, done_at TEXT)"
            )
            # The personal data the system holds (tests and the demo put it here).
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS holdings (subject_id TEXT, record_id TEXT,"
                " data TEXT, PRIMARY KEY (subject_id, record_id))"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS snapshot (taken_at TEXT)")

    def recorded(self, command_id: str) -> Recorded | None:
        row = self._db.execute(
            "SELECT outcome, reason, export_reference, ack FROM outcomes WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        return None if row is None else Recorded(AckOutcome(row[0]), row[1], row[2], row[3])

    def record(self, command: Command, ack: CommandAck, ack_bytes: bytes) -> None:
        """Carry out the command's effect, record its outcome and keep the
        acknowledgement to send, in one transaction: all of it or none."""
        with self._db:
            if ack.outcome is AckOutcome.DONE:
                self._act(command, ack)
            self._db.execute(
                "INSERT OR REPLACE INTO outcomes"
                " (command_id, action, outcome, reason, export_reference, done_at, ack)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    command.command_id,
                    command.action.value,
                    ack.outcome.value,
                    ack.reason,
                    ack.export_reference,
                    ack.acked_at.isoformat(),
                    ack_bytes,
                ),
            )

    def _act(self, command: Command, ack: CommandAck) -> None:
        # The reference system's "data" is this log of effects and the holdings
        # table; a real system deletes, suppresses or exports here, inside the
        # same transaction.
        records: list[str | None] = [*command.record_ids] or [None]
        if command.action is Action.DELETE:
            if command.record_ids:
                self._db.executemany(
                    "DELETE FROM holdings WHERE subject_id = ? AND record_id = ?",
                    [(command.subject_id, r) for r in command.record_ids],
                )
            else:
                self._db.execute("DELETE FROM holdings WHERE subject_id = ?", (command.subject_id,))
        self._db.executemany(
            "INSERT INTO effects VALUES (?, ?, ?, ?)",
            [
                (command.command_id, command.action.value, record_id, ack.acked_at.isoformat())
                for record_id in records
            ],
        )

    def effects(self, command_id: str) -> list[tuple[str, str | None]]:
        """(action, record id) of every effect a command had."""
        return [
            (row[0], row[1])
            for row in self._db.execute(
                "SELECT action, record_id FROM effects WHERE command_id = ? ORDER BY rowid",
                (command_id,),
            )
        ]

    def hold(self, subject_id: str, record_id: str, data: str) -> None:
        """Put a record of personal data into the system (tests and the demo)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO holdings VALUES (?, ?, ?)", (subject_id, record_id, data)
            )

    def held(self, subject_id: str) -> dict[str, str]:
        """Record id -> data of what the system holds on ``subject_id``."""
        rows = self._db.execute(
            "SELECT record_id, data FROM holdings WHERE subject_id = ? ORDER BY record_id",
            (subject_id,),
        )
        return {row[0]: row[1] for row in rows}

    def snapshot(self, target: Path, taken_at: datetime) -> None:
        """A backup of the whole system: its data and its idempotency records, as of
        ``taken_at`` (a real backup holds both, and a restore brings both back)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = sqlite3.connect(target)
        try:
            self._db.backup(copy)
            with copy:
                copy.execute("DELETE FROM snapshot")
                copy.execute("INSERT INTO snapshot VALUES (?)", (taken_at.isoformat(),))
        finally:
            copy.close()

    def restore(self, source: Path) -> datetime:
        """Replace everything with a snapshot; returns when that snapshot was taken.

        Deletions made after it are undone (the erased data is back) and so are
        their idempotency records: the system must be told, so that the pipeline
        sends those deletions again (``Publisher.publish_restored``)."""
        backup = sqlite3.connect(source)
        try:
            row = backup.execute("SELECT taken_at FROM snapshot").fetchone()
            if row is None:
                raise ValueError(f"{source.name} is not a snapshot of a reference store")
            backup.backup(self._db)
        finally:
            backup.close()
        return datetime.fromisoformat(row[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def apply(command: Command, system: str, now: datetime, behaviour: Behaviour) -> CommandAck:
    """Carry out one command (here: pretend) and say how it went."""
    if command.action in behaviour.fail_actions:
        return CommandAck(
            command_id=command.command_id,
            subject_id=command.subject_id,
            system=system,
            outcome=AckOutcome.FAILED,
            reason=f"{command.action.value} failed in {system} (simulated)",
            acked_at=now,
        )
    exported: list[ExportedRecord] = []
    reference = None
    if command.action is Action.EXPORT:
        reference = f"export-{system}-{command.command_id[-12:]}"
        category = command.categories[0] if command.categories else None
        exported = [
            ExportedRecord(
                record_id=record_id,
                category=category,
                provided_by_subject=True,
                fields={"record-id": record_id, "system": system},
            )
            for record_id in command.record_ids
            if category is not None
        ]
    return CommandAck(
        command_id=command.command_id,
        subject_id=command.subject_id,
        system=system,
        outcome=AckOutcome.DONE,
        acked_at=now,
        export_reference=reference,
        exported=exported,
    )


@dataclass(frozen=True)
class Reply:
    """What to send for one command message: its acknowledgement, or a dead letter."""

    ack: bytes | None = None
    ack_key: bytes | None = None
    dead_letter: DeadLetter | None = None
    replayed: bool = False


class CommandProcessor:
    """One command message in, the reply to send out; the store keeps what was done."""

    def __init__(
        self,
        *,
        system: str,
        codec: Codec,
        store: ReferenceStore,
        behaviour: Behaviour = Behaviour(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.system = system
        self.codec = codec
        self.store = store
        self.behaviour = behaviour
        self.clock = clock

    def process(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> Reply:
        decoded = decode_or_dead_letter(
            key,
            value,
            topic,
            partition,
            offset,
            self.clock(),
            codec=self.codec,
            expected=(Command,),
        )
        if isinstance(decoded, DeadLetter):
            # A command we cannot read is the pipeline's bug: keep it, with the
            # reason, where an operator will see it (the pipeline resends it and
            # escalates if it is never acknowledged).
            return Reply(dead_letter=decoded)
        command = decoded.model
        assert isinstance(command, Command)
        if self.behaviour.silent:
            return Reply()
        ack_key = command.subject_id.encode()
        previous = self.store.recorded(command.command_id)
        # A deletion re-sent after a restore is carried out again even when its id is
        # remembered (the idempotency store may not have been restored with the data).
        replayed_delete = command.action is Action.DELETE and REPLAY_OF in command.parameters
        if (
            previous is not None
            and previous.outcome is not AckOutcome.FAILED
            and not replayed_delete
        ):
            ack = previous.ack or self.codec.encode(self._legacy_ack(command, previous))
            return Reply(ack=ack, ack_key=ack_key, replayed=True)
        answer = apply(command, self.system, self.clock(), self.behaviour)
        ack = self.codec.encode(answer)
        self.store.record(command, answer, ack)
        return Reply(ack=ack, ack_key=ack_key)

    def _legacy_ack(self, command: Command, previous: Recorded) -> CommandAck:
        # Recorded before acknowledgements were kept: the outcome without exports.
        return CommandAck(
            command_id=command.command_id,
            subject_id=command.subject_id,
            system=self.system,
            outcome=previous.outcome,
            reason=previous.reason,
            acked_at=self.clock(),
            export_reference=previous.export_reference,
        )


# A consumer that dies without leaving the group (a crash, kill -9) keeps its
# partitions until its session expires: librdkafka's default (45 s) stalled a
# system's commands that long after its consumer was restarted. The pipeline's
# workers use 10 s too (agents/runtime/faust_app.py).
SESSION_TIMEOUT_MS = 10_000


def consumer_config(
    system: str, bootstrap: str, settings: Settings, group_id: str | None = None
) -> dict[str, str | int | bool]:
    """The command consumer's configuration: manual commits, from the earliest command."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id or f"{settings.topic_prefix}.downstream.{system}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        # Commands go out in the worker's per-partition transactions: a command of
        # an aborted (fenced) transaction must never be carried out.
        "isolation.level": "read_committed",
        **settings.security.confluent_config(),
    }


# The group moved on without this member (its session expired during a broker
# failover, or a rebalance is under way): the partition's next owner is sent the
# command again.
GROUP_MOVED_ON = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
    }
)


def commit_or_leave_for_redelivery(commit: Callable[[], object]) -> bool:
    """Commit past a command (its acknowledgement is with the broker already); False
    when the commit failed in a way that heals: the command is then delivered again,
    and answered again from its record (idempotent by command id), not done twice.

    A consumer that exited on such an error restarted only to be sent the same
    command again; errors that do not heal still raise.
    """
    try:
        commit()
    except KafkaException as exc:
        error = kafka_error(exc)
        if error is None or not (error.code() in GROUP_MOVED_ON or is_transient_error(error)):
            raise
        log.warning("commit failed (%s); the command will be delivered again", error.name())
        return False
    return True


class DownstreamConsumer:
    """Consumes ``<prefix>.cmd.<system>`` and acknowledges on ``<prefix>.acks``."""

    def __init__(
        self,
        *,
        system: str,
        bootstrap: str,
        settings: Settings,
        store: ReferenceStore,
        behaviour: Behaviour = Behaviour(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        group_id: str | None = None,
    ) -> None:
        self.system = system
        self.names = TopicNames(settings.topic_prefix)
        self.codec = Codec.from_settings(settings)
        self.store = store
        self.processor = CommandProcessor(
            system=system, codec=self.codec, store=store, behaviour=behaviour, clock=clock
        )
        security = settings.security.confluent_config()
        self.consumer = Consumer(consumer_config(system, bootstrap, settings, group_id))
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": MURMUR2_PARTITIONER,
                **security,
            }
        )
        self.dead_letters = DeadLetterSink(bootstrap, settings, codec=self.codec)
        self.handled = 0
        self.dead_lettered = 0
        self._handled_since_idle = False
        self._stop = threading.Event()

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until ``stop()`` (or, with ``max_idle_s``, until idle that long)."""
        self.consumer.subscribe([self.names.command(self.system)])
        idle = 0.0
        try:
            while not self._stop.is_set():
                msg = self.consumer.poll(0.5)
                if msg is None:
                    self._commit_position()
                    idle += 0.5
                    if max_idle_s is not None and idle >= max_idle_s:
                        return
                    continue
                idle = 0.0
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", error)
                    continue
                self.handle(msg)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.dead_letters.close()

    def stop(self) -> None:
        self._stop.set()

    def handle(self, msg: Message) -> None:
        reply = self.processor.process(
            msg.key(),
            msg.value(),
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
        )
        if reply.dead_letter is not None:
            log_dead_letter(reply.dead_letter, log)
            # Raises if the broker does not confirm it: then nothing is committed.
            self.dead_letters.send(reply.dead_letter)
            self.dead_lettered += 1
        if reply.ack is not None:
            self._send_ack(reply.ack_key, reply.ack)
            self.handled += 1
        commit_or_leave_for_redelivery(
            lambda: self.consumer.commit(message=msg, asynchronous=False)
        )
        self._handled_since_idle = True

    def _commit_position(self) -> None:
        """Idle, every delivered command handled: commit the position, which has
        moved past the commit markers that end the worker's transactions (never
        delivered, so a commit by message offset stays one short of the end, and
        the group's lag would read 1 per partition for good)."""
        if not self._handled_since_idle:
            return
        self._handled_since_idle = False
        assigned = self.consumer.assignment()
        if not assigned:
            return
        positions = [tp for tp in self.consumer.position(assigned) if tp.offset >= 0]
        if positions:
            commit_or_leave_for_redelivery(
                lambda: self.consumer.commit(offsets=positions, asynchronous=False)
            )

    def _send_ack(self, key: bytes | None, ack: bytes) -> None:
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        self.producer.produce(self.names.acks, key=key, value=ack, on_delivery=delivered)
        remaining = self.producer.flush(30)
        if remaining or errors:
            # Not committing the command's offset means it is redelivered.
            raise RuntimeError(f"acknowledgement not delivered: {errors or 'flush timeout'}")
