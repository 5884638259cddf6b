"""Applies batches of topic messages to the read model, offsets in the same transaction.

``Store.apply(messages)`` is idempotent and safe to run from several
projectors at once: inside one writer transaction it skips every message below
the stored next offset of its partition, applies the rest and moves the
offsets. A crash before commit leaves neither rows nor offsets, so the
messages are read again; a crash after leaves both.

Order within a batch: state changelog messages are reduced to the last one per
key (a changelog is a compacted log: the last value is the truth) and applied
first (forgetting first, then deletes, then upserts, each grouped into one
statement per table); then the public topics in their log order.

Forgetting (like the pipeline): when the worker keeps nothing on a subject
(``ForgetSubject``) every row naming it goes, and its pseudonym is noted in
``forgotten`` so that an answer or command about it still in flight is not
stored afterwards. When an erasure is answered (completed or partially
refused), the bodies of the subject's earlier answers (an access report, an
export) are dropped. ``purge`` drops rows older than their topic's retention.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from agents.audit.chain import event_hash, pseudonym
from agents.clock import Clock
from desk.readmodel import contracts, state_projection
from desk.readmodel import tables as t
from desk.readmodel.db import lock_writer, make_engine, migrate, scrub, writing
from desk.readmodel.ops import Delete, ForgetSubject, RowOp, Unreadable, Upsert
from desk.readmodel.topics import DeskTopics, Kind
from schemas.audit import GENESIS_HASH, AuditEvent
from schemas.commands import Command, CommandAck
from schemas.deadletter import DeadLetter
from schemas.responses import RequestResponse, ResponseStatus
from streams.codec import Codec, DecodeError

log = logging.getLogger(__name__)

TABLES: dict[str, Table] = {table.name: table for table in t.metadata.sorted_tables}
ERASED = (ResponseStatus.COMPLETED.value, ResponseStatus.PARTIALLY_REFUSED.value)
_EXPECTED: dict[Kind, tuple[type[Any], ...]] = {
    "responses": (RequestResponse,),
    "commands": (Command,),
    "acks": (CommandAck,),
    "audit": (AuditEvent,),
    "dead_letter": (DeadLetter,),
}


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class ApplyResult:
    applied: int = 0
    skipped: int = 0  # below the stored offset: already applied
    unreadable: int = 0


@dataclass
class _Chain:
    checked: int
    duplicates: int
    head_sequence: int
    head_hash: str
    broken: tuple[int, int | None, str] | None
    changed: bool = False


@dataclass
class _Batch:
    conn: Connection
    now: datetime
    result: ApplyResult = field(default_factory=ApplyResult)
    chains: dict[int, _Chain] = field(default_factory=dict)
    pending_actions: set[str] = field(default_factory=set)


def upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, replace: bool
) -> None:
    """Insert ``rows``; on a primary-key clash replace the row (or keep the old one)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    if replace:
        others = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=others), rows)
    else:
        conn.execute(stmt.on_conflict_do_nothing(index_elements=keys), rows)


class Store:
    def __init__(
        self, engine: Engine, *, topics: DeskTopics, audit_key: bytes, codec: Codec, clock: Clock
    ) -> None:
        self.engine = engine
        self.topics = topics
        self.audit_key = audit_key
        self.codec = codec
        self.clock = clock
        # Personal data was deleted and the database files not yet scrubbed of it.
        self._to_scrub = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        topics: DeskTopics,
        audit_key: bytes,
        codec: Codec | None = None,
        clock: Clock,
    ) -> Store:
        """Connect, migrate, and rebuild the state tables if the projection changed."""
        engine = make_engine(url)
        migrate(engine)
        store = cls(engine, topics=topics, audit_key=audit_key, codec=codec or Codec(), clock=clock)
        store._check_projection_version()
        return store

    def close(self) -> None:
        self.engine.dispose()

    def ref(self, subject_id: str) -> str:
        """The subject's pseudonym, as on the audit trail."""
        return pseudonym(self.audit_key, subject_id)

    def _check_projection_version(self) -> None:
        with writing(self.engine.connect()) as conn, conn.begin():
            lock_writer(conn)
            row = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "state_projection"))
            stored = row.scalar_one_or_none()
            if stored == state_projection.VERSION:
                return
            if stored is not None:
                log.info(
                    "state projection changed (%s -> %s): rebuilding the state tables",
                    stored,
                    state_projection.VERSION,
                )
            for table in t.STATE_TABLES:
                conn.execute(delete(table))
            # The public topics are named "<prefix>.<name>": every other offset is a changelog's.
            conn.execute(
                delete(t.offsets).where(~t.offsets.c.topic.startswith(self.topics.prefix + "."))
            )
            upsert(
                conn,
                t.meta,
                [{"key": "state_projection", "value": state_projection.VERSION}],
                replace=True,
            )

    # -- offsets ---------------------------------------------------------------------

    def next_offsets(self) -> dict[tuple[str, int], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.offsets)).all()
        return {(r.topic, r.partition): r.next_offset for r in rows}

    # -- applying --------------------------------------------------------------------

    def apply(self, messages: Iterable[Message]) -> ApplyResult:
        batch_in = list(messages)
        with writing(self.engine.connect()) as conn, conn.begin():
            lock_writer(conn)
            batch = _Batch(conn, self.clock.now())
            stored = {
                (r.topic, r.partition): r.next_offset
                for r in conn.execute(
                    select(t.offsets).where(t.offsets.c.topic.in_({m.topic for m in batch_in}))
                )
            }
            fresh = [m for m in batch_in if m.offset >= stored.get((m.topic, m.partition), 0)]
            batch.result.skipped = len(batch_in) - len(fresh)
            state = [m for m in fresh if self.topics.kind(m.topic) == "state"]
            public = [m for m in fresh if self.topics.kind(m.topic) not in ("state", None)]
            self._apply_state(batch, state)
            if public:
                self._load_audit_context(batch, public)
                for m in public:
                    self._apply_public(batch, m)
                self._save_chains(batch)
            ends: dict[tuple[str, int], int] = {}
            for m in fresh:
                ends[(m.topic, m.partition)] = max(
                    ends.get((m.topic, m.partition), 0), m.offset + 1
                )
            upsert(
                conn,
                t.offsets,
                [{"topic": k[0], "partition": k[1], "next_offset": v} for k, v in ends.items()],
                replace=True,
            )
            batch.result.applied = len(fresh) - batch.result.unreadable
        self._scrub()
        return batch.result

    def _scrub(self) -> None:
        """After a committed deletion of personal data, once no transaction is open."""
        if self._to_scrub:
            self._to_scrub = not scrub(self.engine)

    def _unreadable(self, batch: _Batch, m: Message, reason: str) -> None:
        # The position and the reason only: a payload can hold personal data.
        log.warning("unreadable message on %s[%d]@%d: %s", m.topic, m.partition, m.offset, reason)
        batch.result.unreadable += 1
        upsert(
            batch.conn,
            t.unreadable,
            [
                {
                    "topic": m.topic,
                    "partition": m.partition,
                    "offset": m.offset,
                    "reason": reason[:1000],
                    "seen_at": batch.now,
                }
            ],
            replace=True,
        )

    def _apply_state(self, batch: _Batch, messages: list[Message]) -> None:
        last: dict[tuple[str, bytes | None], Message] = {}
        for m in messages:
            last.pop((m.topic, m.key), None)  # keep log order of the survivors
            last[(m.topic, m.key)] = m
        ops: list[RowOp] = []
        for m in last.values():
            try:
                ops.extend(state_projection.apply(m.topic, m.key, m.value, batch.now))
            except Unreadable as exc:
                self._unreadable(batch, m, str(exc))
        self.apply_ops(batch.conn, ops)

    def apply_ops(self, conn: Connection, ops: Sequence[RowOp]) -> None:
        """Forget, then delete, then upsert; one statement per table and shape."""
        for forget in ops:
            if isinstance(forget, ForgetSubject):
                self._forget(conn, forget.subject_id, forget.at)
        deletes: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        upserts: dict[str, list[dict[str, Any]]] = {}
        for op in ops:
            if isinstance(op, Delete):
                deletes.setdefault((op.table, tuple(sorted(op.match))), []).append(op.match)
            elif isinstance(op, Upsert):
                upserts.setdefault(op.table, []).append(op.row)
        for (name, columns), matches in deletes.items():
            table = TABLES[name]
            where = and_(*(table.c[c] == bindparam(f"m_{c}") for c in columns))
            conn.execute(
                delete(table).where(where),
                [{f"m_{c}": match[c] for c in columns} for match in matches],
            )
        for name, rows in upserts.items():
            upsert(conn, TABLES[name], rows, replace=True)
        subjects = upserts.get("subjects", [])
        if subjects:  # a subject with state again is no longer forgotten
            conn.execute(
                delete(t.forgotten).where(t.forgotten.c.subject_ref == bindparam("ref")),
                [{"ref": self.ref(row["subject_id"])} for row in subjects],
            )

    def _forget(self, conn: Connection, subject_id: str, at: datetime) -> None:
        self._to_scrub = True
        for table in (*t.STATE_TABLES, t.responses, t.commands, t.acks, t.dead_letters):
            conn.execute(delete(table).where(table.c.subject_id == subject_id))
        conn.execute(
            update(t.desk_actions)
            .where(t.desk_actions.c.subject_id == subject_id)
            .values(subject_id=None)
        )
        upsert(
            conn,
            t.forgotten,
            [{"subject_ref": self.ref(subject_id), "forgotten_at": at}],
            replace=True,
        )

    def _forgotten_since(self, conn: Connection, subject_id: str, when: datetime) -> bool:
        """Whether a message about ``subject_id`` from ``when`` predates its forgetting."""
        row = conn.execute(
            select(t.forgotten.c.forgotten_at).where(
                t.forgotten.c.subject_ref == self.ref(subject_id)
            )
        ).scalar_one_or_none()
        return row is not None and when <= row

    # -- public topics -----------------------------------------------------------------

    def _load_audit_context(self, batch: _Batch, public: list[Message]) -> None:
        if not any(self.topics.kind(m.topic) == "audit" for m in public):
            return
        for r in batch.conn.execute(select(t.audit_chains)):
            broken = (
                None
                if r.broken_offset is None
                else (r.broken_offset, r.broken_sequence, r.broken_reason or "")
            )
            batch.chains[r.partition] = _Chain(
                r.checked, r.duplicates, r.head_sequence, r.head_hash, broken
            )
        batch.pending_actions = set(
            batch.conn.execute(
                select(t.desk_actions.c.event_id).where(t.desk_actions.c.decided_at.is_(None))
            ).scalars()
        )

    def _apply_public(self, batch: _Batch, m: Message) -> None:
        kind = self.topics.kind(m.topic)
        assert kind is not None
        assert kind != "state"
        try:
            model = self.codec.decode(
                m.value, m.key, now=batch.now, expected=_EXPECTED[kind], check_key=False
            )
        except DecodeError as exc:
            self._unreadable(batch, m, exc.reason)
            return
        conn = batch.conn
        if isinstance(model, RequestResponse):
            if self._forgotten_since(conn, model.subject_id, model.issued_at):
                return
            upsert(
                conn,
                t.responses,
                [contracts.response_row(model, m.partition, m.offset)],
                replace=True,
            )
            if model.request_type.value == "erasure" and model.status.value in ERASED:
                self._forget_earlier_bodies(conn, model)
        elif isinstance(model, Command):
            if self._forgotten_since(conn, model.subject_id, model.issued_at):
                return
            self._upsert_command(conn, model)
        elif isinstance(model, CommandAck):
            if self._forgotten_since(conn, model.subject_id, model.acked_at):
                return
            upsert(conn, t.acks, [contracts.ack_row(model, m.partition, m.offset)], replace=False)
        elif isinstance(model, AuditEvent):
            self._apply_audit(batch, m, model)
        elif isinstance(model, DeadLetter):
            upsert(
                conn,
                t.dead_letters,
                [contracts.dead_letter_row(model, m.partition, m.offset)],
                replace=False,
            )

    @staticmethod
    def _upsert_command(conn: Connection, command: Command) -> None:
        """One row per command id: its first issue time and its latest attempt."""
        row = contracts.command_row(command)
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(t.commands)
        later = {k: stmt.excluded[k] for k in ("issued_at", "deadline", "attempt")}
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["command_id"],
                set_=later,
                where=stmt.excluded.attempt > t.commands.c.attempt,
            ),
            [row],
        )

    def _forget_earlier_bodies(self, conn: Connection, erasure: RequestResponse) -> None:
        self._to_scrub = True
        r = t.responses
        conn.execute(
            update(r)
            .where(
                r.c.subject_id == erasure.subject_id,
                r.c.issued_at <= erasure.issued_at,
                r.c.request_type != "erasure",
                r.c.body_json.is_not(None),
            )
            .values(body_json=None, body_forgotten=f"erasure {erasure.request_id}")
        )

    def _apply_audit(self, batch: _Batch, m: Message, event: AuditEvent) -> None:
        chain = batch.chains.get(m.partition)
        if chain is None:
            chain = batch.chains[m.partition] = _Chain(0, 0, -1, GENESIS_HASH, None)
        if self._duplicate(batch.conn, m.partition, event):
            # A redelivered copy of an event already in the chain (agents.audit.chain).
            chain.duplicates += 1
            chain.changed = True
            return
        if chain.broken is None:
            reason = None
            if event_hash(event, self.audit_key) != event.hash:
                reason = "hash does not match the event's content and key"
            elif event.prev_hash != chain.head_hash:
                reason = "prev_hash does not match the previous event"
            elif event.sequence != chain.head_sequence + 1:
                reason = f"sequence {event.sequence} follows {chain.head_sequence}"
            if reason is None:
                chain.checked += 1
                chain.head_sequence, chain.head_hash = event.sequence, event.hash
            else:
                chain.broken = (m.offset, event.sequence, reason)
            chain.changed = True
        row = contracts.audit_row(event, m.offset)
        row["partition"] = m.partition  # the chain is the Kafka partition's
        upsert(batch.conn, t.audit, [row], replace=False)
        decided = batch.pending_actions.intersection(event.event_ids_in)
        if decided:
            batch.conn.execute(
                update(t.desk_actions)
                .where(t.desk_actions.c.event_id.in_(decided))
                .values(decided_at=event.decided_at, decision=event.decision)
            )
            batch.pending_actions -= decided

    @staticmethod
    def _duplicate(conn: Connection, partition: int, event: AuditEvent) -> bool:
        stored = conn.execute(
            select(t.audit.c.hash).where(
                t.audit.c.partition == partition, t.audit.c.sequence == event.sequence
            )
        ).scalar_one_or_none()
        return stored is not None and stored == event.hash

    def _save_chains(self, batch: _Batch) -> None:
        rows = [
            {
                "partition": p,
                "checked": c.checked,
                "duplicates": c.duplicates,
                "head_sequence": c.head_sequence,
                "head_hash": c.head_hash,
                "broken_offset": c.broken[0] if c.broken else None,
                "broken_sequence": c.broken[1] if c.broken else None,
                "broken_reason": c.broken[2] if c.broken else None,
                "updated_at": batch.now,
            }
            for p, c in batch.chains.items()
            if c.changed
        ]
        upsert(batch.conn, t.audit_chains, rows, replace=True)

    # -- the desk's own ------------------------------------------------------------------

    def record_action(
        self,
        *,
        event_id: str,
        kind: str,
        subject_id: str,
        target_id: str | None,
        actor: str,
        published_at: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            upsert(
                conn,
                t.desk_actions,
                [
                    {
                        "event_id": event_id,
                        "kind": kind,
                        "subject_id": subject_id,
                        "subject_ref": self.ref(subject_id),
                        "target_id": target_id,
                        "actor": actor,
                        "published_at": published_at,
                        "decided_at": None,
                        "decision": None,
                    }
                ],
                replace=False,
            )
            # The worker may have decided it before this row was written.
            decision = conn.execute(
                select(t.audit.c.decided_at, t.audit.c.decision)
                .where(t.audit.c.subject_ref == self.ref(subject_id))
                .where(t.audit.c.event_ids_in.contains(json.dumps(event_id)))
                .order_by(t.audit.c.decided_at)
                .limit(1)
            ).first()
            if decision is not None:
                conn.execute(
                    update(t.desk_actions)
                    .where(t.desk_actions.c.event_id == event_id)
                    .values(decided_at=decision.decided_at, decision=decision.decision)
                )

    # -- retention ---------------------------------------------------------------------

    def purge(self, retention: dict[str, timedelta]) -> dict[str, int]:
        """Drop rows older than their topic's retention (``DeskTopics.retention``)."""
        now = self.clock.now()
        columns = {
            "responses": t.responses.c.issued_at,
            "commands": t.commands.c.issued_at,
            "acks": t.acks.c.acked_at,
            "dead_letter": t.dead_letters.c.failed_at,
            "forgotten": t.forgotten.c.forgotten_at,
        }
        dropped: dict[str, int] = {}
        with writing(self.engine.connect()) as conn, conn.begin():
            lock_writer(conn)
            for kind, column in columns.items():
                keep = retention.get(kind)
                if keep is None:
                    continue
                result = conn.execute(delete(column.table).where(column < now - keep))
                dropped[kind] = result.rowcount
                self._to_scrub = self._to_scrub or result.rowcount > 0
        self._scrub()
        return dropped
