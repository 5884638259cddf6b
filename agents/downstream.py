"""Reference consumer for downstream stores.

What every system holding personal data must do with the pipeline's
commands, in runnable form: read its own command topic, carry the command out,
reply on the acknowledgement topic, and only then commit the offset. It is
idempotent by command id: a redelivered or re-sent command is answered again
with the outcome already recorded, never carried out twice.

The "store" here is a small SQLite file that records what was done, which is
enough for tests and the demo; a real system replaces ``apply`` with its own
deletion, suppression or export.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer

from schemas.commands import AckOutcome, Action, Command, CommandAck, ExportedRecord
from streams.codec import Codec, DecodeError
from streams.settings import Settings
from streams.topics import MURMUR2_PARTITIONER, TopicNames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Behaviour:
    """Test and demo knobs: which actions fail, whether to answer at all."""

    fail_actions: frozenset[Action] = frozenset()
    silent: bool = False


@dataclass
class ReferenceStore:
    """Outcomes by command id, in SQLite so a restart keeps idempotency."""

    path: Path
    _db: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outcomes (command_id TEXT PRIMARY KEY, action TEXT,"
            " outcome TEXT, reason TEXT, export_reference TEXT, done_at TEXT)"
        )
        self._db.commit()

    def recorded(self, command_id: str) -> tuple[str, str | None, str | None] | None:
        row = self._db.execute(
            "SELECT outcome, reason, export_reference FROM outcomes WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def record(self, command: Command, ack: CommandAck) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?)",
            (
                command.command_id,
                command.action.value,
                ack.outcome.value,
                ack.reason,
                ack.export_reference,
                ack.acked_at.isoformat(),
            ),
        )
        self._db.commit()

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
        self.behaviour = behaviour
        self.clock = clock
        security = settings.security.confluent_config()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id or f"{settings.topic_prefix}.downstream.{system}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **security,
            }
        )
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": MURMUR2_PARTITIONER,
                **security,
            }
        )
        self.handled = 0
        self._stop = threading.Event()

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until ``stop()`` (or, with ``max_idle_s``, until idle that long)."""
        self.consumer.subscribe([self.names.command(self.system)])
        idle = 0.0
        try:
            while not self._stop.is_set():
                msg = self.consumer.poll(0.5)
                if msg is None:
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

    def stop(self) -> None:
        self._stop.set()

    def handle(self, msg: Message) -> None:
        try:
            command = self.codec.decode(
                msg.value(), msg.key(), now=self.clock(), expected=(Command,)
            )
        except DecodeError as exc:
            # A command we cannot read is the pipeline's bug; log (no payload) and move on.
            log.error("undecodable command at offset %s: %s", msg.offset(), exc)
            self.consumer.commit(message=msg, asynchronous=False)
            return
        assert isinstance(command, Command)
        if self.behaviour.silent:
            self.consumer.commit(message=msg, asynchronous=False)
            return
        ack = self._ack_for(command)
        self._send_ack(ack)
        self.consumer.commit(message=msg, asynchronous=False)
        self.handled += 1

    def _ack_for(self, command: Command) -> CommandAck:
        now = self.clock()
        previous = self.store.recorded(command.command_id)
        if previous is not None and previous[0] != AckOutcome.FAILED.value:
            outcome, reason, reference = previous
            return CommandAck(
                command_id=command.command_id,
                subject_id=command.subject_id,
                system=self.system,
                outcome=AckOutcome(outcome),
                reason=reason,
                acked_at=now,
                export_reference=reference,
            )
        ack = apply(command, self.system, now, self.behaviour)
        self.store.record(command, ack)
        return ack

    def _send_ack(self, ack: CommandAck) -> None:
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        self.producer.produce(
            self.names.acks,
            key=ack.subject_id.encode(),
            value=self.codec.encode(ack),
            on_delivery=delivered,
        )
        remaining = self.producer.flush(30)
        if remaining or errors:
            # Not committing the command's offset means it is redelivered.
            raise RuntimeError(f"acknowledgement not delivered: {errors or 'flush timeout'}")
