"""The read model's tables (SQLAlchemy Core), one source for queries and migrations.

Times are timezone-aware UTC in Python and stored as UTC (``UtcDateTime``).
Lists are stored as JSON text: they are shown, never queried into.

Which tables hold what:

* state tables (``STATE_TABLES``): what the worker holds on each subject now,
  written only through ``state_projection``;
* ``responses``, ``commands``, ``acks``, ``audit``, ``audit_chains``,
  ``dead_letters``: the public topics (``contracts``). Acks keep no exported
  values and commands no parameters (those can be personal data); dead
  letters keep the reason and the subject (their key), never the original bytes;
* ``desk_actions``: events this desk published and whether the worker has
  decided them; ``forgotten``: pseudonyms of subjects whose data was dropped;
* ``offsets`` (next offset per topic partition, written in the same transaction
  as the rows it produced) and ``meta``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

ID = 128  # schemas.base.Identifier: at most 128 characters
SLUG = 63
SHORT = 1000


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("the read model stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        # SQLite has no time zones: naive UTC text sorts and compares correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# -- what the worker holds now (state_projection) ---------------------------------------

subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(ID), primary_key=True),
    Column("restricted", Boolean, nullable=False),
    Column("suppressed_since", UtcDateTime),
    Column("suppression_channels", Text),  # JSON list
    Column("projected_at", UtcDateTime, nullable=False),
)

records = Table(
    "records",
    metadata,
    Column("subject_id", String(ID), primary_key=True),
    Column("system", String(SLUG), primary_key=True),
    Column("record_id", String(ID), primary_key=True),
    Column("category", String(SLUG), nullable=False),
    Column("legal_basis", String(SLUG), nullable=False),
    Column("source", String(SLUG), nullable=False),
    Column("purpose", String(SLUG), nullable=False),
    Column("controller_id", String(SLUG), nullable=False),
    Column("contract_id", String(ID)),
    Column("status", String(SLUG), nullable=False),
    Column("rule_id", String(SHORT)),
    Column("due_at", UtcDateTime),
    Column("held_by", Text),  # JSON list of hold ids blocking its deletion
    Column("registered_at", UtcDateTime, nullable=False),
    Column("command_id", String(ID)),
)

holds = Table(
    "holds",
    metadata,
    Column("subject_id", String(ID), primary_key=True),
    Column("hold_id", String(ID), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("case_reference", Text, nullable=False),
    Column("categories", Text),  # JSON list; empty with record_ids: every record
    Column("record_ids", Text),  # JSON list
    Column("placed_at", UtcDateTime, nullable=False),
    Column("controller_id", String(SLUG), nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("subject_id", String(ID), primary_key=True),
    Column("purpose", String(SLUG), primary_key=True),
    Column("given_at", UtcDateTime),
    Column("withdrawn_at", UtcDateTime),
)

requests = Table(
    "requests",
    metadata,
    Column("subject_id", String(ID), primary_key=True),
    Column("request_id", String(ID), primary_key=True),
    Column("request_type", String(SLUG), nullable=False),
    Column("status", String(SLUG), nullable=False),
    Column("controller_id", String(SLUG), nullable=False),
    Column("is_open", Boolean, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    # None while the clock waits for identity (N12); provisional_due_at then
    # says when the evidence is chased.
    Column("due_at", UtcDateTime),
    Column("provisional_due_at", UtcDateTime),
    Column("awaiting_identity", Boolean, nullable=False),
    Column("extended_months", Integer, nullable=False),
    Column("missing_evidence", Text),  # JSON list
    Column("evidence", Text),  # JSON list of {document_type, received_at, issued_on}
    Column("pending_commands", Integer, nullable=False),
    Column("reasons", Text),  # JSON list
    Column("closed_at", UtcDateTime),
    # received_at orders those awaiting identity (due_at NULL) without a sort.
    Index(None, "is_open", "due_at", "received_at"),
    Index(None, "is_open", "request_type", "due_at"),
    Index(None, "is_open", "status", "due_at"),
    Index(None, "request_id"),
)

outstanding = Table(
    "outstanding",
    metadata,
    Column("subject_id", String(ID), primary_key=True),
    Column("command_id", String(ID), primary_key=True),
    Column("action", String(SLUG), nullable=False),
    Column("target_system", String(SLUG), nullable=False),
    Column("rule_id", String(SHORT), nullable=False),
    Column("request_id", String(ID)),
    Column("attempt", Integer, nullable=False),
    Column("sent_at", UtcDateTime, nullable=False),
    Column("next_retry_at", UtcDateTime),
    Column("escalated", Boolean, nullable=False),
    Column("record_ids", Text),  # JSON list
    Index(None, "escalated", "target_system"),
)

STATE_TABLES: tuple[Table, ...] = (subjects, records, holds, consents, requests, outstanding)

# -- the public topics (contracts) ---------------------------------------------------

responses = Table(
    "responses",
    metadata,
    Column("response_id", String(ID), primary_key=True),
    Column("subject_id", String(ID), nullable=False),
    Column("request_id", String(ID), nullable=False),
    Column("request_type", String(SLUG), nullable=False),
    Column("status", String(SLUG), nullable=False),
    Column("controller_id", String(SLUG), nullable=False),
    Column("reasons", Text),  # JSON list
    Column("missing_evidence", Text),  # JSON list
    Column("kept", Text),  # JSON list of KeptItem
    Column("body_json", Text),  # the report or export as sent; None once forgotten
    Column("body_forgotten", Text),  # why the body was dropped
    Column("received_at", UtcDateTime, nullable=False),
    Column("due_at", UtcDateTime),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Index(None, "subject_id", "request_id", "issued_at"),
    Index(None, "request_id"),
    Index(None, "issued_at"),
)

commands = Table(
    "commands",
    metadata,
    Column("command_id", String(ID), primary_key=True),
    Column("subject_id", String(ID), nullable=False),
    Column("target_system", String(SLUG), nullable=False),
    Column("action", String(SLUG), nullable=False),
    Column("rule_id", String(SHORT), nullable=False),
    Column("request_id", String(ID)),
    Column("record_ids", Text),  # JSON list
    Column("categories", Text),  # JSON list
    Column("first_issued_at", UtcDateTime, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("deadline", UtcDateTime, nullable=False),
    Column("attempt", Integer, nullable=False),
    Index(None, "subject_id"),
    Index(None, "issued_at"),
)

acks = Table(
    "acks",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("command_id", String(ID), nullable=False),
    Column("subject_id", String(ID), nullable=False),
    Column("system", String(SLUG), nullable=False),
    Column("outcome", String(SLUG), nullable=False),
    Column("reason", Text),
    Column("export_reference", Text),
    Column("acked_at", UtcDateTime, nullable=False),
    Index(None, "subject_id"),
    Index(None, "command_id"),
    Index(None, "acked_at"),
)

audit = Table(
    "audit",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    Column("audit_id", String(ID), nullable=False),
    Column("subject_ref", String(64), nullable=False),
    Column("controller_id", String(SLUG), nullable=False),
    Column("rule_id", String(SHORT), nullable=False),
    Column("policy_version", String(SHORT), nullable=False),
    Column("decision", String(SLUG), nullable=False),
    Column("event_ids_in", Text),  # JSON list
    Column("command_ids_out", Text),  # JSON list
    Column("event_time", UtcDateTime, nullable=False),
    Column("decided_at", UtcDateTime, nullable=False),
    Column("details", Text),  # JSON object
    Column("hash", String(64), nullable=False),
    Index(None, "subject_ref", "decided_at"),
    Index(None, "decision", "decided_at"),
)

audit_chains = Table(
    "audit_chains",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("checked", BigInteger, nullable=False),
    # Byte-identical redeliveries of an event already in the chain: no new fact.
    Column("duplicates", BigInteger, nullable=False),
    Column("head_sequence", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("broken_offset", BigInteger),
    Column("broken_sequence", BigInteger),
    Column("broken_reason", Text),
    Column("updated_at", UtcDateTime, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("source_topic", String(249), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("reason_class", String(SLUG), nullable=False),
    # Set for a parked item: it decoded but could not be processed or delivered.
    Column("failure_class", String(SLUG)),
    Column("subject_id", String(ID)),  # the original key, when it is one
    Column("reason", Text, nullable=False),
    Column("size", BigInteger),
    Column("failed_at", UtcDateTime, nullable=False),
    Index(None, "failed_at"),
    Index(None, "subject_id"),
)

# -- the desk's own ------------------------------------------------------------------

desk_actions = Table(
    "desk_actions",
    metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("kind", String(SLUG), nullable=False),
    Column("subject_id", String(ID)),  # None once the subject is forgotten
    Column("subject_ref", String(64), nullable=False),
    Column("target_id", String(ID)),  # the hold, request or complaint acted on
    Column("actor", String(SHORT), nullable=False),
    Column("published_at", UtcDateTime, nullable=False),
    Column("decided_at", UtcDateTime),
    Column("decision", String(SLUG)),
    Index(None, "subject_id", "published_at"),
)

forgotten = Table(
    "forgotten",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("forgotten_at", UtcDateTime, nullable=False),
)

unreadable = Table(
    "unreadable",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
)

offsets = Table(
    "offsets",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(SLUG), primary_key=True),
    Column("value", Text, nullable=False),
)
