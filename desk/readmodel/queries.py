"""What the desk asks the read model: every query is by key or by an index.

A subject's page is a handful of primary-key and index lookups; the list of
requests by deadline reads the ``(is_open, due_at)`` index (or the type and
status variants) up to its page size. Neither grows with the number of
subjects (``bench/desk_bench.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Row, func, select

from agents.rights.deadlines import DUE_SOON, DeadlineBucket, deadline_bucket
from desk.readmodel import tables as t

Bucket = Literal["overdue", "due_7d", "later", "awaiting_identity"]
BUCKETS: tuple[Bucket, ...] = ("overdue", "due_7d", "later", "awaiting_identity")
TIMELINE_LIMIT = 300


def _list(text: str | None) -> list[Any]:
    return [] if not text else list(json.loads(text))


def _dict(text: str | None) -> dict[str, Any]:
    return {} if not text else dict(json.loads(text))


@dataclass(frozen=True)
class RequestRow:
    subject_id: str
    request_id: str
    request_type: str
    status: str
    controller_id: str
    is_open: bool
    received_at: datetime
    due_at: datetime | None  # None: the clock waits for identity
    provisional_due_at: datetime | None
    awaiting_identity: bool
    extended_months: int
    missing_evidence: list[str]
    evidence: list[dict[str, Any]]
    pending_commands: int
    reasons: list[str]
    closed_at: datetime | None
    bucket: DeadlineBucket | None  # None when closed or awaiting identity

    @classmethod
    def of(cls, row: Row[Any], now: datetime) -> RequestRow:
        due = row.due_at
        return cls(
            subject_id=row.subject_id,
            request_id=row.request_id,
            request_type=row.request_type,
            status=row.status,
            controller_id=row.controller_id,
            is_open=bool(row.is_open),
            received_at=row.received_at,
            due_at=due,
            provisional_due_at=row.provisional_due_at,
            awaiting_identity=bool(row.awaiting_identity),
            extended_months=row.extended_months,
            missing_evidence=_list(row.missing_evidence),
            evidence=_list(row.evidence),
            pending_commands=row.pending_commands,
            reasons=_list(row.reasons),
            closed_at=row.closed_at,
            bucket=deadline_bucket(due, now) if due is not None and row.is_open else None,
        )


@dataclass(frozen=True)
class Filters:
    request_type: str | None = None
    status: str | None = None
    bucket: Bucket | None = None


def _open_requests(filters: Filters) -> Any:
    r = t.requests
    query = select(r).where(r.c.is_open.is_(True))
    if filters.request_type:
        query = query.where(r.c.request_type == filters.request_type)
    if filters.status:
        query = query.where(r.c.status == filters.status)
    return query


def requests_by_deadline(
    conn: Connection, now: datetime, filters: Filters = Filters(), *, limit: int = 100
) -> list[RequestRow]:
    """Open requests, the most urgent first: overdue, due within 7 days, later (by due
    time), then those whose clock waits for identity (by receipt)."""
    r = t.requests
    rows: list[Row[Any]] = []
    bucket = filters.bucket
    if bucket != "awaiting_identity":
        dated = _open_requests(filters).where(r.c.due_at.is_not(None))
        if bucket == "overdue":
            dated = dated.where(r.c.due_at < now)
        elif bucket == "due_7d":
            dated = dated.where(r.c.due_at >= now, r.c.due_at <= now + DUE_SOON)
        elif bucket == "later":
            dated = dated.where(r.c.due_at > now + DUE_SOON)
        rows += conn.execute(dated.order_by(r.c.due_at, r.c.subject_id).limit(limit)).all()
    if bucket in (None, "awaiting_identity") and len(rows) < limit:
        waiting = _open_requests(filters).where(r.c.due_at.is_(None))
        rows += conn.execute(
            waiting.order_by(r.c.received_at, r.c.subject_id).limit(limit - len(rows))
        ).all()
    return [RequestRow.of(row, now) for row in rows]


def bucket_counts(conn: Connection, now: datetime, filters: Filters = Filters()) -> dict[str, int]:
    """How many open requests are in each bucket (with the type and status filters)."""
    r = t.requests
    base = Filters(filters.request_type, filters.status)

    def count(*where: Any) -> int:
        query = _open_requests(base).where(*where).with_only_columns(func.count())
        return int(conn.execute(query).scalar_one())

    return {
        "overdue": count(r.c.due_at < now),
        "due_7d": count(r.c.due_at >= now, r.c.due_at <= now + DUE_SOON),
        "later": count(r.c.due_at > now + DUE_SOON),
        "awaiting_identity": count(r.c.due_at.is_(None)),
    }


@dataclass(frozen=True)
class CommandView:
    command_id: str
    action: str
    target_system: str
    rule_id: str
    request_id: str | None
    record_ids: list[str]
    attempt: int
    sent_at: datetime
    outstanding: bool
    escalated: bool
    next_retry_at: datetime | None
    acks: list[Row[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TimelineEntry:
    decided_at: datetime
    event_time: datetime
    rule_id: str
    decision: str
    details: dict[str, Any]
    event_ids_in: list[str]
    command_ids_out: list[str]
    partition: int
    sequence: int


@dataclass(frozen=True)
class SubjectView:
    subject_id: str
    known: bool  # False: the worker holds nothing on it (or never saw it)
    restricted: bool
    suppressed_since: datetime | None
    suppression_channels: list[str]
    records: list[Row[Any]]
    held_by: dict[str, list[str]]  # record key -> hold ids
    holds: list[dict[str, Any]]
    consents: list[Row[Any]]
    requests: list[RequestRow]
    commands: list[CommandView]
    timeline: list[TimelineEntry]
    actions: list[Row[Any]]

    @property
    def open_requests(self) -> list[RequestRow]:
        return [q for q in self.requests if q.is_open]

    @property
    def closed_requests(self) -> list[RequestRow]:
        return [q for q in self.requests if not q.is_open]

    @property
    def outstanding(self) -> list[CommandView]:
        return [c for c in self.commands if c.outstanding]

    @property
    def controller_id(self) -> str | None:
        if self.records:
            return str(self.records[0].controller_id)
        return self.requests[0].controller_id if self.requests else None


def _acks_by_command(conn: Connection, subject_id: str) -> dict[str, list[Row[Any]]]:
    a = t.acks
    out: dict[str, list[Row[Any]]] = {}
    for row in conn.execute(select(a).where(a.c.subject_id == subject_id).order_by(a.c.acked_at)):
        out.setdefault(row.command_id, []).append(row)
    return out


def _commands(
    conn: Connection, subject_id: str, request_id: str | None = None
) -> list[CommandView]:
    """Every command of the subject seen on the command topics, and every outstanding
    one the worker tracks, with their acknowledgements; outstanding first, newest first."""
    o, c = t.outstanding, t.commands
    acks = _acks_by_command(conn, subject_id)
    tracked_q = select(o).where(o.c.subject_id == subject_id)
    sent_q = select(c).where(c.c.subject_id == subject_id)
    if request_id is not None:
        tracked_q = tracked_q.where(o.c.request_id == request_id)
        sent_q = sent_q.where(c.c.request_id == request_id)
    views: dict[str, CommandView] = {}
    for row in conn.execute(tracked_q):
        views[row.command_id] = CommandView(
            command_id=row.command_id,
            action=row.action,
            target_system=row.target_system,
            rule_id=row.rule_id,
            request_id=row.request_id,
            record_ids=_list(row.record_ids),
            attempt=row.attempt,
            sent_at=row.sent_at,
            outstanding=True,
            escalated=bool(row.escalated),
            next_retry_at=row.next_retry_at,
            acks=acks.get(row.command_id, []),
        )
    for row in conn.execute(sent_q):
        if row.command_id in views:
            continue
        views[row.command_id] = CommandView(
            command_id=row.command_id,
            action=row.action,
            target_system=row.target_system,
            rule_id=row.rule_id,
            request_id=row.request_id,
            record_ids=_list(row.record_ids),
            attempt=row.attempt,
            sent_at=row.issued_at,
            outstanding=False,
            escalated=False,
            next_retry_at=None,
            acks=acks.get(row.command_id, []),
        )
    return sorted(views.values(), key=lambda v: (not v.outstanding, -v.sent_at.timestamp()))


def timeline(
    conn: Connection, subject_ref: str, *, limit: int = TIMELINE_LIMIT
) -> list[TimelineEntry]:
    """The subject's decisions from the audit trail (found by its pseudonym), newest first."""
    a = t.audit
    rows = conn.execute(
        select(a)
        .where(a.c.subject_ref == subject_ref)
        .order_by(a.c.decided_at.desc(), a.c.partition, a.c.sequence.desc())
        .limit(limit)
    )
    return [
        TimelineEntry(
            decided_at=r.decided_at,
            event_time=r.event_time,
            rule_id=r.rule_id,
            decision=r.decision,
            details=_dict(r.details),
            event_ids_in=_list(r.event_ids_in),
            command_ids_out=_list(r.command_ids_out),
            partition=r.partition,
            sequence=r.sequence,
        )
        for r in rows
    ]


def subject_view(conn: Connection, subject_id: str, subject_ref: str, now: datetime) -> SubjectView:
    s = conn.execute(select(t.subjects).where(t.subjects.c.subject_id == subject_id)).first()
    records = conn.execute(
        select(t.records)
        .where(t.records.c.subject_id == subject_id)
        .order_by(t.records.c.system, t.records.c.record_id)
    ).all()
    holds = [
        {**row._asdict(), "categories": _list(row.categories), "record_ids": _list(row.record_ids)}
        for row in conn.execute(
            select(t.holds).where(t.holds.c.subject_id == subject_id).order_by(t.holds.c.placed_at)
        )
    ]
    consents = conn.execute(
        select(t.consents)
        .where(t.consents.c.subject_id == subject_id)
        .order_by(t.consents.c.purpose)
    ).all()
    request_rows = conn.execute(
        select(t.requests)
        .where(t.requests.c.subject_id == subject_id)
        .order_by(t.requests.c.received_at.desc())
    ).all()
    actions = conn.execute(
        select(t.desk_actions)
        .where(t.desk_actions.c.subject_id == subject_id)
        .order_by(t.desk_actions.c.published_at.desc())
        .limit(50)
    ).all()
    return SubjectView(
        subject_id=subject_id,
        known=s is not None,
        restricted=bool(s.restricted) if s else False,
        suppressed_since=s.suppressed_since if s else None,
        suppression_channels=_list(s.suppression_channels) if s else [],
        records=list(records),
        held_by={f"{r.system}/{r.record_id}": _list(r.held_by) for r in records},
        holds=holds,
        consents=list(consents),
        requests=[RequestRow.of(row, now) for row in request_rows],
        commands=_commands(conn, subject_id),
        timeline=timeline(conn, subject_ref),
        actions=list(actions),
    )


@dataclass(frozen=True)
class RequestView:
    request: RequestRow | None  # None: not (or no longer) in the worker's state
    subject_id: str
    request_id: str
    responses: list[Row[Any]]
    commands: list[CommandView]

    @property
    def latest(self) -> Row[Any] | None:
        return self.responses[-1] if self.responses else None

    @property
    def request_type(self) -> str | None:
        if self.request is not None:
            return self.request.request_type
        return self.latest.request_type if self.latest is not None else None


def request_view(conn: Connection, subject_id: str, request_id: str, now: datetime) -> RequestView:
    r = t.requests
    row = conn.execute(
        select(r).where(r.c.subject_id == subject_id, r.c.request_id == request_id)
    ).first()
    return RequestView(
        request=RequestRow.of(row, now) if row is not None else None,
        subject_id=subject_id,
        request_id=request_id,
        responses=responses(conn, subject_id, request_id),
        commands=_commands(conn, subject_id, request_id),
    )


def responses(conn: Connection, subject_id: str, request_id: str) -> list[Row[Any]]:
    """The request's answers in the order they were issued (log order on a tie)."""
    p = t.responses
    return list(
        conn.execute(
            select(p)
            .where(p.c.subject_id == subject_id, p.c.request_id == request_id)
            .order_by(p.c.issued_at, p.c.partition, p.c.offset)
        )
    )


def subjects_of_request(conn: Connection, request_id: str) -> list[str]:
    """Subjects with a request (or an answer) under this id."""
    found = set(
        conn.execute(
            select(t.requests.c.subject_id).where(t.requests.c.request_id == request_id)
        ).scalars()
    )
    found |= set(
        conn.execute(
            select(t.responses.c.subject_id).where(t.responses.c.request_id == request_id)
        ).scalars()
    )
    return sorted(found)


def search_subjects(conn: Connection, prefix: str, *, limit: int = 50) -> list[str]:
    """Subject ids starting with ``prefix`` (an index range, not a scan)."""
    s = t.subjects.c.subject_id
    query = select(s).where(s >= prefix, s < prefix + "\U0010ffff").order_by(s).limit(limit)
    return list(conn.execute(query).scalars())


@dataclass(frozen=True)
class Escalations:
    by_system: dict[str, list[Row[Any]]]
    parked: list[Row[Any]]
    dead_letters: list[Row[Any]]
    dead_letter_counts: list[Row[Any]]
    unreadable: list[Row[Any]]
    overdue: list[OverdueFinding] = field(default_factory=list)


@dataclass(frozen=True)
class OverdueFinding:
    """Records the worker's standing reconciliation found kept past their time with
    no reason on record (audit ``overdue-found``): the trail's entry names them by
    pseudonym, record ids and due times only."""

    decided_at: datetime
    subject_ref: str
    partition: int
    sequence: int
    record_ids: str
    due_at: str


def overdue_findings(conn: Connection, *, limit: int = 50) -> list[OverdueFinding]:
    """The latest ``overdue-found`` entries of the audit trail, newest first."""
    a = t.audit
    rows = conn.execute(
        select(a)
        .where(a.c.decision == "overdue-found")
        .order_by(a.c.decided_at.desc())
        .limit(limit)
    ).all()
    out: list[OverdueFinding] = []
    for row in rows:
        details = json.loads(row.details or "{}")
        out.append(
            OverdueFinding(
                row.decided_at,
                row.subject_ref,
                row.partition,
                row.sequence,
                str(details.get("record-ids", "")),
                str(details.get("due-at", "")),
            )
        )
    return out


def escalations(conn: Connection, *, limit: int = 500) -> Escalations:
    """Commands the worker gave up on, per system; dead letters; what the desk could not read."""
    o = t.outstanding
    by_system: dict[str, list[Row[Any]]] = {}
    for row in conn.execute(
        select(o)
        .where(o.c.escalated.is_(True))
        .order_by(o.c.target_system, o.c.sent_at)
        .limit(limit)
    ):
        by_system.setdefault(row.target_system, []).append(row)
    d = t.dead_letters
    counts = conn.execute(
        select(d.c.source_topic, d.c.reason_class, d.c.failure_class, func.count().label("n"))
        .group_by(d.c.source_topic, d.c.reason_class, d.c.failure_class)
        .order_by(d.c.source_topic, d.c.reason_class, d.c.failure_class)
    ).all()
    latest = conn.execute(select(d).order_by(d.c.failed_at.desc()).limit(50)).all()
    unreadable = conn.execute(
        select(t.unreadable).order_by(t.unreadable.c.seen_at.desc()).limit(50)
    ).all()
    return Escalations(
        by_system,
        parked(conn, limit=200),
        list(latest),
        list(counts),
        list(unreadable),
        overdue_findings(conn),
    )


def parked(
    conn: Connection, *, include_undecodable: bool = False, limit: int = 1000
) -> list[Row[Any]]:
    """Parked items (decoded, but not processed or not delivered), oldest first; with
    ``include_undecodable`` also the dead letters of input that never decoded."""
    d = t.dead_letters
    query = select(d)
    if not include_undecodable:
        query = query.where(d.c.failure_class.is_not(None))
    query = query.order_by(d.c.failed_at, d.c.source_topic, d.c.source_partition, d.c.source_offset)
    return list(conn.execute(query.limit(limit)))


def audit_chains(conn: Connection) -> list[Row[Any]]:
    return list(conn.execute(select(t.audit_chains).order_by(t.audit_chains.c.partition)))


def progress(conn: Connection) -> Sequence[Row[Any]]:
    """Next offset per topic partition: how far the read model has read."""
    return conn.execute(select(t.offsets).order_by(t.offsets.c.topic, t.offsets.c.partition)).all()
