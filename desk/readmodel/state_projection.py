"""The one place that reads the worker's internal state: its table changelogs.

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

Today's format (``agents.rules.state``): the ``subjects`` table holds one JSON
``SubjectState`` per subject (key: the subject id); a tombstone means the
worker keeps nothing on the subject (``ForgetSubject``). Each value replaces the
subject's rows in every state table.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from agents.rules.state import SubjectState
from desk.readmodel.ops import Delete, ForgetSubject, RowOp, Unreadable, Upsert
from desk.readmodel.tables import STATE_TABLES

VERSION = "subjects-json/1"


def topics(app_id: str) -> list[str]:
    """The worker's state changelogs the desk reads (Faust: ``<app id>-<table>-changelog``)."""
    return [f"{app_id}-subjects-changelog"]


def apply(topic: str, key: bytes | None, value: bytes | None, at: datetime) -> list[RowOp]:
    if key is None:
        raise Unreadable("changelog message without a key")
    try:
        subject_id = key.decode()
    except UnicodeDecodeError:
        raise Unreadable("changelog key is not UTF-8") from None
    if not value:
        return [ForgetSubject(subject_id, at)]
    try:
        state = SubjectState.model_validate_json(value)
    except ValidationError as exc:
        raise Unreadable(f"not a SubjectState ({exc.error_count()} error(s))") from None
    if state.subject_id != subject_id:
        raise Unreadable("changelog key is not the state's subject id")
    return [*(Delete(t.name, {"subject_id": subject_id}) for t in STATE_TABLES), *_rows(state, at)]


def _json(values: list[Any]) -> str:
    return json.dumps(values, separators=(",", ":"), default=str)


def _rows(state: SubjectState, at: datetime) -> list[RowOp]:
    sid = state.subject_id
    suppression = state.suppression
    out: list[RowOp] = [
        Upsert(
            "subjects",
            {
                "subject_id": sid,
                "restricted": state.restricted,
                "suppressed_since": suppression.since if suppression else None,
                "suppression_channels": (
                    _json([c.value for c in suppression.channels]) if suppression else None
                ),
                "projected_at": at,
            },
        )
    ]
    for r in state.records.values():
        out.append(
            Upsert(
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
        )
    for h in state.holds.values():
        out.append(
            Upsert(
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
        )
    for consent in state.consents.values():
        out.append(
            Upsert(
                "consents",
                {
                    "subject_id": sid,
                    "purpose": consent.purpose,
                    "given_at": consent.given_at,
                    "withdrawn_at": consent.withdrawn_at,
                },
            )
        )
    for q in state.requests.values():
        if q.placeholder:  # evidence waiting for its request: not a request yet
            continue
        waiting = q.awaiting_identity
        out.append(
            Upsert(
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
                    "pending_commands": len(q.pending_command_ids),
                    "reasons": _json(q.reasons),
                    "closed_at": q.closed_at,
                },
            )
        )
    for o in state.commands.values():
        c = o.command
        out.append(
            Upsert(
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
        )
    return out
