"""Events that publishing systems send into the pipeline.

One frozen model per Avro record in ``schemas/avro/events``. Every event names
its subject, the controller the data belongs to (processor mode, N2), the
system that produced it and when it happened.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from schemas.base import (
    Channel,
    DataCategory,
    DataSource,
    DocumentType,
    EventTime,
    Frozen,
    Identifier,
    LegalBasis,
    ObjectionKind,
    ShortText,
    Slug,
)

DEFAULT_CONTROLLER = "smartcomms"


class Event(Frozen):
    """Fields every input event carries."""

    event_id: Identifier
    subject_id: Identifier
    controller_id: Slug = DEFAULT_CONTROLLER
    source_system: Slug
    event_time: EventTime


class CallRecorded(Event):
    """The call recorder stored a recording of a call with the subject (N7, N14)."""

    recording_id: Identifier
    system: Slug
    duration_seconds: int = Field(default=0, ge=0, le=86_400)


class RecordRegistered(Event):
    """A system reports it holds a record of some category for the subject (N3, N4)."""

    record_id: Identifier
    system: Slug
    category: DataCategory
    source: DataSource
    legal_basis: LegalBasis
    purpose: Slug
    contract_id: Identifier | None = None
    fields: list[Slug] = Field(default_factory=list, max_length=100)


class ContractStarted(Event):
    contract_id: Identifier


class ContractEnded(Event):
    contract_id: Identifier


class MarketingOptOutReceived(Event):
    """The subject opted out of marketing on the given channels (N1)."""

    channels: list[Channel] = Field(min_length=1, max_length=5)


class ConsentGiven(Event):
    purpose: Slug


class ConsentWithdrawn(Event):
    """Withdrawal stops the processing that relied on consent for this purpose (N4)."""

    purpose: Slug


class ErasureRequested(Event):
    request_id: Identifier


class AccessRequested(Event):
    request_id: Identifier


class RectificationRequested(Event):
    """Corrections carry new values: they are personal data and leave with the command."""

    request_id: Identifier
    corrections: dict[Slug, ShortText] = Field(min_length=1, max_length=50)


class RestrictionRequested(Event):
    request_id: Identifier
    reason: ShortText


class RestrictionLifted(Event):
    request_id: Identifier


class PortabilityRequested(Event):
    request_id: Identifier


class ObjectionReceived(Event):
    request_id: Identifier
    kind: ObjectionKind


class IdentityEvidenceReceived(Event):
    """A document the privacy desk received to verify identity (N12).

    ``issued_on`` matters for utility bills (not older than three months when
    received); ``event_time`` is when the evidence was received.
    """

    request_id: Identifier
    evidence_id: Identifier
    document_type: DocumentType
    issued_on: date | None = None


class LegalHoldPlaced(Event):
    """A hold stops deletion of matching records until released (N7)."""

    hold_id: Identifier
    reason: ShortText
    case_reference: ShortText
    categories: list[DataCategory] = Field(default_factory=list, max_length=20)
    record_ids: list[Identifier] = Field(default_factory=list, max_length=1000)


class LegalHoldReleased(Event):
    hold_id: Identifier


class ComplaintReceived(Event):
    complaint_id: Identifier
    summary: ShortText


class ComplaintAnswered(Event):
    """The privacy desk answered a complaint; the answer goes to the subject (N13)."""

    complaint_id: Identifier
    answer: ShortText


class RequestExtended(Event):
    """An extension of up to two further months for a complex request (N13)."""

    request_id: Identifier
    months: int = Field(ge=1, le=2)
    reason: ShortText


class RequestRefused(Event):
    """The privacy desk refuses a request outright, e.g. manifestly unfounded (N10)."""

    request_id: Identifier
    reason: ShortText


class SourceWatermark(Frozen):
    """A heartbeat: the system has published every event with an event time at or
    before ``watermark``. The publisher SDK sends it to every partition of the
    system's own input topic (``Publisher.publish_watermark``); it names no subject
    and carries no personal data (N9 answers wait for it: docs/event-time.md)."""

    event_id: Identifier
    source_system: Slug
    watermark: EventTime


INPUT_EVENTS: tuple[type[Event], ...] = (
    CallRecorded,
    RecordRegistered,
    ContractStarted,
    ContractEnded,
    MarketingOptOutReceived,
    ConsentGiven,
    ConsentWithdrawn,
    ErasureRequested,
    AccessRequested,
    RectificationRequested,
    RestrictionRequested,
    RestrictionLifted,
    PortabilityRequested,
    ObjectionReceived,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    LegalHoldReleased,
    ComplaintReceived,
    ComplaintAnswered,
    RequestExtended,
    RequestRefused,
)
