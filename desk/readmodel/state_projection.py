"""The one place that reads the worker's internal state: its table changelog.

Everything else in the read model comes from public Avro contracts; this
module is the adapter to the worker's private format, so that a change of that
format is a change here only. Its interface:

* ``VERSION``: bump it when the projection changes; the store then drops the
  state tables and re-reads the changelogs from the start (``store.Store.open``);
* ``topics(app_id)``: the changelog topics to read;
* ``apply(topic, key, value, at)``: the row operations (``ops``) for one
  changelog message. Changelogs are compacted key/value logs: the last value
  of a key is the truth, so the store applies only the last message per key of
  a batch.

Today's format (``agents.store.keys``, docs/state.md): the ``subjects`` table
keys each subject's entries below its id. The desk reads three kinds:

* the header (``h``): the subject row, its holds, consents and requests (each
  header replaces those rows); its tombstone means the worker keeps nothing on
  the subject any more (``ForgetSubject``);
* a record (``r``) and an outstanding command (``c``): one row each, deleted
  with their tombstone;
* anything else (due indexes, dedup marks, request items, closed command ids)
  is bookkeeping the desk does not show.

A subject still in the previous format (one JSON ``SubjectState`` under its
id, ``agents.store.legacy``) is read as before. The worker deletes that value
when it converts the subject, right after writing the keyed entries, so its
tombstone is not a forgetting and changes nothing here; a subject forgotten in
the previous format (before the upgrade) is forgotten here once the store
re-reads a changelog whose compaction has dropped its old values (within a day).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from agents.rules.state import (
    ConsentState,
    Hold,
    OutstandingCommand,
    RecordState,
    RequestState,
    SubjectHeader,
    Suppression,
)
from agents.store import keys
from agents.store.codec import UnreadableState, decode
from agents.store.legacy import LegacySubjectState, request_of
from desk.readmodel.ops import Delete, ForgetSubject, RowOp, Unreadable, Upsert
from desk.readmodel.tables import STATE_TABLES, consents, holds, requests
from schemas.commands import Command

VERSION = "subjects-keyed/1"


def topics(app_id: str) -> list[str]:
    """The worker's state changelogs the desk reads (Faust: ``<app id>-<table>-changelog``)."""
    return [f"{app_id}-subjects-changelog"]


def apply(topic: str, key: bytes | None, value: bytes | None, at: datetime) -> list[RowOp]:
    if key is None:
        raise Unreadable("changelog message without a key")
    if key[:1] in (keys.WATERMARK, keys.WAITING, keys.DEFERRED) and key[1:2] == keys.SEP:
        return []  # the partition's watermarks and waits: nothing the desk shows
    try:
        subject_id = keys.subject_of(key)
    except UnicodeDecodeError:
        raise Unreadable("changelog key is not UTF-8") from None
    if subject_id is None:
        raise Unreadable("changelog key names no subject")
    if keys.is_legacy(key):
        return _previous_format(subject_id, value, at)
    try:
        return _entry(key, subject_id, value, at)
    except UnreadableState as exc:
        raise Unreadable(exc.reason) from None


def _entry(key: bytes, sid: str, value: bytes | None, at: datetime) -> list[RowOp]:
    ns = key[:1]
    if ns == keys.HEADER:
        if value is None:
            return [ForgetSubject(sid, at)]
        h = decode(SubjectHeader, key, value)
        if h.subject_id != sid:
            raise Unreadable("changelog key is not the header's subject id")
        shown = (holds, consents, requests)
        return [
            *(Delete(table.name, {"subject_id": sid}) for table in shown),
            _subject_row(sid, h.restricted, h.suppression, at),
            *(_hold_row(sid, hold) for hold in h.holds.values()),
            *(_consent_row(sid, consent) for consent in h.consents.values()),
            *(_request_row(sid, q) for q in h.requests.values() if not q.placeholder),
        ]
    if ns == keys.RECORD:
        system, record_id = keys.name_of(ns, sid, key).split("/", 1)
        if value is None:
            match = {"subject_id": sid, "system": system, "record_id": record_id}
            return [Delete("records", match)]
        return [_record_row(sid, decode(RecordState, key, value))]
    if ns == keys.COMMAND:
        command_id = keys.name_of(ns, sid, key)
        if value is None:
            return [Delete("outstanding", {"subject_id": sid, "command_id": command_id})]
        tracked = decode(OutstandingCommand, key, value)
        return [_outstanding_row(sid, tracked.command, tracked)]
    return []


def _previous_format(sid: str, value: bytes | None, at: datetime) -> list[RowOp]:
    if value is None:
        return []  # converted to keyed entries (see the module doc)
    try:
        state = LegacySubjectState.model_validate_json(value)
    except ValidationError as exc:
        raise Unreadable(f"not a SubjectState ({exc.error_count()} error(s))") from None
    if state.subject_id != sid:
        raise Unreadable("changelog key is not the state's subject id")
    return [
        *(Delete(t.name, {"subject_id": sid}) for t in STATE_TABLES),
        _subject_row(sid, state.restricted, state.suppression, at),
        *(_record_row(sid, r) for r in state.records.values()),
        *(_hold_row(sid, hold) for hold in state.holds.values()),
        *(_consent_row(sid, consent) for consent in state.consents.values()),
        *(
            _request_row(sid, request_of(q, pending=len(q.pending_command_ids)))
            for q in state.requests.values()
            if not q.placeholder
        ),
        *(_outstanding_row(sid, o.command, o) for o in state.commands.values()),
    ]


def _json(values: list[Any]) -> str:
    return json.dumps(values, separators=(",", ":"), default=str)


def _subject_row(
    sid: str, restricted: bool, suppression: Suppression | None, at: datetime
) -> Upsert:
    return Upsert(
        "subjects",
        {
            "subject_id": sid,
            "restricted": restricted,
            "suppressed_since": suppression.since if suppression else None,
            "suppression_channels": (
                _json([c.value for c in suppression.channels]) if suppression else None
            ),
            "projected_at": at,
        },
    )


def _record_row(sid: str, r: RecordState) -> Upsert:
    return Upsert(
        "records",
        {
            "subject_id": sid,
            "system": r.system,
            "record_id": r.record_id,
            "category": r.category.value,
            "legal_basis": r.legal_basis.value,
            "source": r.source.value,
            "purpose": r.purpose,
            "controller_id": r.controller_id,
            "contract_id": r.contract_id,
            "status": r.status.value,
            "rule_id": r.rule_id,
            "due_at": r.due_at,
            "held_by": _json(r.held_by),
            "registered_at": r.registered_at,
            "command_id": r.command_id,
        },
    )


def _hold_row(sid: str, h: Hold) -> Upsert:
    return Upsert(
        "holds",
        {
            "subject_id": sid,
            "hold_id": h.hold_id,
            "reason": h.reason,
            "case_reference": h.case_reference,
            "categories": _json([c.value for c in h.categories]),
            "record_ids": _json(h.record_ids),
            "placed_at": h.placed_at,
            "controller_id": h.controller_id,
        },
    )


def _consent_row(sid: str, consent: ConsentState) -> Upsert:
    return Upsert(
        "consents",
        {
            "subject_id": sid,
            "purpose": consent.purpose,
            "given_at": consent.given_at,
            "withdrawn_at": consent.withdrawn_at,
        },
    )


def _request_row(sid: str, q: RequestState) -> Upsert:
    waiting = q.awaiting_identity
    return Upsert(
        "requests",
        {
            "subject_id": sid,
            "request_id": q.request_id,
            "request_type": q.request_type.value,
            "status": q.status.value,
            "controller_id": q.controller_id,
            "is_open": not q.final,
            "received_at": q.received_at,
            "due_at": None if waiting else q.due_at,
            "provisional_due_at": q.due_at if waiting else None,
            "awaiting_identity": waiting,
            "extended_months": q.extended_months,
            "missing_evidence": _json(q.missing_evidence),
            "evidence": _json(
                [
                    {
                        "document_type": e.document_type.value,
                        "received_at": e.received_at.isoformat(),
                        "issued_on": e.issued_on.isoformat() if e.issued_on else None,
                    }
                    for e in q.evidence
                ]
            ),
            "pending_commands": q.pending,
            "reasons": _json(q.reasons),
            "closed_at": q.closed_at,
        },
    )


def _outstanding_row(sid: str, c: Command, o: Any) -> Upsert:
    return Upsert(
        "outstanding",
        {
            "subject_id": sid,
            "command_id": c.command_id,
            "action": c.action.value,
            "target_system": c.target_system,
            "rule_id": c.rule_id,
            "request_id": c.request_id,
            "attempt": c.attempt,
            "sent_at": o.sent_at,
            "next_retry_at": None if o.escalated else o.next_retry_at,
            "escalated": o.escalated,
            "record_ids": _json(c.record_ids),
        },
    )
