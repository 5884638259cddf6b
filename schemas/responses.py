"""Answers to data-subject requests (N9-N13), as sent on the responses topic."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.base import (
    DataCategory,
    Frozen,
    Identifier,
    LongText,
    RequestType,
    ShortText,
    Slug,
    UtcDatetime,
)


class ResponseStatus(StrEnum):
    AWAITING_IDENTITY = "awaiting_identity"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    PARTIALLY_REFUSED = "partially_refused"
    REFUSED = "refused"
    FAILED = "failed"


class KeptItem(Frozen):
    """A record not erased or not released, and why (N10)."""

    record_id: Identifier
    system: Slug
    category: DataCategory
    reason: ShortText


class RequestResponse(Frozen):
    response_id: Identifier
    request_id: Identifier
    request_type: RequestType
    subject_id: Identifier
    controller_id: Slug
    status: ResponseStatus
    reasons: list[ShortText] = Field(default_factory=list, max_length=100)
    missing_evidence: list[ShortText] = Field(default_factory=list, max_length=10)
    kept: list[KeptItem] = Field(default_factory=list, max_length=10_000)
    # Structured body (access report, portability export) as JSON text: its
    # shape is versioned by the report itself, not by this envelope.
    body_json: LongText | None = None
    received_at: UtcDatetime
    due_at: UtcDatetime | None = None
    issued_at: UtcDatetime
