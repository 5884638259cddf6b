"""Rows from the pipeline's public topics (Avro contracts in ``schemas/``).

Each function takes a decoded message and its position and returns the row for
it. What is left out on purpose: an ack's exported values and a command's
parameters (personal data the desk does not need: the answer as sent carries
the export), and a dead letter's original bytes (only the reason is shown).
"""

from __future__ import annotations

import json
from typing import Any

from schemas.audit import AuditEvent
from schemas.commands import Command, CommandAck
from schemas.deadletter import DeadLetter
from schemas.responses import RequestResponse


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def response_row(r: RequestResponse, partition: int, offset: int) -> dict[str, Any]:
    return {
        "response_id": r.response_id,
        "subject_id": r.subject_id,
        "request_id": r.request_id,
        "request_type": r.request_type.value,
        "status": r.status.value,
        "controller_id": r.controller_id,
        "reasons": _json(r.reasons),
        "missing_evidence": _json(r.missing_evidence),
        "kept": _json([k.model_dump(mode="json") for k in r.kept]),
        "body_json": r.body_json,
        "body_forgotten": None,
        "received_at": r.received_at,
        "due_at": r.due_at,
        "issued_at": r.issued_at,
        "partition": partition,
        "offset": offset,
    }


def command_row(c: Command) -> dict[str, Any]:
    return {
        "command_id": c.command_id,
        "subject_id": c.subject_id,
        "target_system": c.target_system,
        "action": c.action.value,
        "rule_id": c.rule_id,
        "request_id": c.request_id,
        "record_ids": _json(c.record_ids),
        "categories": _json([x.value for x in c.categories]),
        "first_issued_at": c.issued_at,
        "issued_at": c.issued_at,
        "deadline": c.deadline,
        "attempt": c.attempt,
    }


def ack_row(a: CommandAck, partition: int, offset: int) -> dict[str, Any]:
    return {
        "partition": partition,
        "offset": offset,
        "command_id": a.command_id,
        "subject_id": a.subject_id,
        "system": a.system,
        "outcome": a.outcome.value,
        "reason": a.reason,
        "export_reference": a.export_reference,
        "acked_at": a.acked_at,
    }


def audit_row(e: AuditEvent, offset: int) -> dict[str, Any]:
    return {
        "partition": e.partition,
        "sequence": e.sequence,
        "offset": offset,
        "audit_id": e.audit_id,
        "subject_ref": e.subject_ref,
        "controller_id": e.controller_id,
        "rule_id": e.rule_id,
        "policy_version": e.policy_version,
        "decision": e.decision,
        "event_ids_in": _json(e.event_ids_in),
        "command_ids_out": _json(e.command_ids_out),
        "event_time": e.event_time,
        "decided_at": e.decided_at,
        "details": _json(e.details),
        "hash": e.hash,
    }


def _subject(key: bytes | None) -> str | None:
    # An input event's key is its subject id (what the desk works with).
    if key is None:
        return None
    try:
        return key.decode("utf-8")[:128]
    except UnicodeDecodeError:
        return None


def dead_letter_row(d: DeadLetter, partition: int, offset: int) -> dict[str, Any]:
    return {
        "partition": partition,
        "offset": offset,
        "source_topic": d.topic,
        "source_partition": d.partition,
        "source_offset": d.offset,
        "reason_class": d.reason_class.value,
        "failure_class": d.failure_class.value if d.failure_class else None,
        "subject_id": _subject(d.original_key),
        "reason": d.reason,
        "size": d.original_value_size,
        "failed_at": d.failed_at,
    }
