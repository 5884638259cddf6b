"""Desk actions as pipeline events: built from a form, validated by the event model,
published through the publisher SDK like any other system's events.

Each action is an event on ``<prefix>.in.privacy-desk``; the worker decides it
and audits it like every other event, and the desk shows it as decided once
the audit trail names its event id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from schemas.base import DataCategory, DocumentType
from schemas.events import (
    DEFAULT_CONTROLLER,
    ComplaintAnswered,
    Event,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    LegalHoldReleased,
    RequestExtended,
)

SOURCE = "privacy-desk"


class ActionError(ValueError):
    """The form does not make a valid event; the message names fields, never values."""


@dataclass(frozen=True)
class Action:
    kind: str  # hold-placed, hold-released, request-extended, evidence-recorded, complaint-answered
    event: Event
    target_id: str
    summary: str


def _one(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _many(form: Any, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _event(model: type[Event], **fields: Any) -> Event:
    try:
        return model.model_validate(fields, context={"now": fields["event_time"]})
    except ValidationError as exc:
        bad = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
        raise ActionError(f"check these fields: {', '.join(bad)}") from None


Builder = Callable[[Any, str, str, datetime], Action]


def place_hold(form: Any, subject_id: str, controller_id: str, now: datetime) -> Action:
    hold_id = _one(form, "hold_id") or _new_id("hold")
    categories = _many(form, "categories")
    if any(c not in DataCategory.__members__.values() for c in categories):
        raise ActionError("check these fields: categories")
    event = _event(
        LegalHoldPlaced,
        event_id=_new_id("desk"),
        subject_id=subject_id,
        controller_id=controller_id,
        source_system=SOURCE,
        event_time=now,
        hold_id=hold_id,
        reason=_one(form, "reason"),
        case_reference=_one(form, "case_reference"),
        categories=categories,
        record_ids=_many(form, "record_ids"),
    )
    scope = ", ".join(categories + _many(form, "record_ids")) or "every record"
    return Action("hold-placed", event, hold_id, f"legal hold {hold_id} on {scope}")


def release_hold(form: Any, subject_id: str, controller_id: str, now: datetime) -> Action:
    hold_id = _one(form, "hold_id")
    event = _event(
        LegalHoldReleased,
        event_id=_new_id("desk"),
        subject_id=subject_id,
        controller_id=controller_id,
        source_system=SOURCE,
        event_time=now,
        hold_id=hold_id,
    )
    return Action("hold-released", event, hold_id, f"release of legal hold {hold_id}")


def extend_request(form: Any, subject_id: str, controller_id: str, now: datetime) -> Action:
    request_id = _one(form, "request_id")
    months = _one(form, "months")
    event = _event(
        RequestExtended,
        event_id=_new_id("desk"),
        subject_id=subject_id,
        controller_id=controller_id,
        source_system=SOURCE,
        event_time=now,
        request_id=request_id,
        months=int(months) if months.isdigit() else 0,
        reason=_one(form, "reason"),
    )
    return Action("request-extended", event, request_id, f"extension of {request_id}")


def record_evidence(form: Any, subject_id: str, controller_id: str, now: datetime) -> Action:
    request_id = _one(form, "request_id")
    issued = _one(form, "issued_on")
    try:
        issued_on = date.fromisoformat(issued) if issued else None
    except ValueError:
        raise ActionError("check these fields: issued_on") from None
    document_type = _one(form, "document_type")
    if document_type not in DocumentType.__members__.values():
        raise ActionError("check these fields: document_type")
    event = _event(
        IdentityEvidenceReceived,
        event_id=_new_id("desk"),
        subject_id=subject_id,
        controller_id=controller_id,
        source_system=SOURCE,
        event_time=now,
        request_id=request_id,
        evidence_id=_new_id("evidence"),
        document_type=document_type,
        issued_on=issued_on,
    )
    return Action(
        "evidence-recorded", event, request_id, f"{document_type} for request {request_id}"
    )


def answer_complaint(form: Any, subject_id: str, controller_id: str, now: datetime) -> Action:
    complaint_id = _one(form, "complaint_id")
    event = _event(
        ComplaintAnswered,
        event_id=_new_id("desk"),
        subject_id=subject_id,
        controller_id=controller_id,
        source_system=SOURCE,
        event_time=now,
        complaint_id=complaint_id,
        answer=_one(form, "answer"),
    )
    return Action("complaint-answered", event, complaint_id, f"answer to complaint {complaint_id}")


BUILDERS: dict[str, Builder] = {
    "hold": place_hold,
    "release": release_hold,
    "extend": extend_request,
    "evidence": record_evidence,
    "answer-complaint": answer_complaint,
}

__all__ = ["BUILDERS", "DEFAULT_CONTROLLER", "Action", "ActionError"]
