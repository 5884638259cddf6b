"""Event factories for the integration tests: the fields every test fills in the same way.

Times default to now (when the event is built); event ids follow a fixed scheme
unless a test names its own, since tests look events up by id on the audit topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from schemas.base import Channel, DataCategory, DataSource, LegalBasis
from schemas.events import CallRecorded, Event, MarketingOptOutReceived, RecordRegistered

E = TypeVar("E", bound=Event)


def registered(
    subject: str,
    record_id: str,
    system: str,
    category: DataCategory,
    *,
    when: datetime | None = None,
    basis: LegalBasis = LegalBasis.CONTRACT,
    purpose: str = "service-delivery",
    source: DataSource = DataSource.SUBJECT,
    contract_id: str | None = None,
    source_system: str = "crm",
    event_id: str | None = None,
) -> RecordRegistered:
    """A record the subject now has in ``system`` (event id ``ev-reg-<subject>-<record>``)."""
    return RecordRegistered(
        event_id=event_id or f"ev-reg-{subject}-{record_id}",
        subject_id=subject,
        source_system=source_system,
        event_time=when or datetime.now(UTC),
        record_id=record_id,
        system=system,
        category=category,
        source=source,
        legal_basis=basis,
        purpose=purpose,
        contract_id=contract_id,
    )


def desk_request(
    event_type: type[E],
    subject: str,
    request_id: str,
    *,
    event_id: str,
    when: datetime | None = None,
    **fields: Any,
) -> E:
    """A request the privacy desk logs for ``subject`` (erasure, access, restriction...)."""
    data: dict[str, Any] = {
        "event_id": event_id,
        "subject_id": subject,
        "source_system": "privacy-desk",
        "event_time": when or datetime.now(UTC),
        "request_id": request_id,
        **fields,
    }
    return event_type(**data)


def opted_out(
    subject: str,
    channels: list[Channel],
    *,
    source_system: str = "marketing",
    event_id: str | None = None,
    when: datetime | None = None,
) -> MarketingOptOutReceived:
    """A marketing opt-out (event id ``ev-optout-<subject>``)."""
    return MarketingOptOutReceived(
        event_id=event_id or f"ev-optout-{subject}",
        subject_id=subject,
        source_system=source_system,
        event_time=when or datetime.now(UTC),
        channels=channels,
    )


def call_recorded(
    subject: str, recording_id: str, *, event_id: str, when: datetime
) -> CallRecorded:
    """A call recording on the call recorder, made at ``when``."""
    return CallRecorded(
        event_id=event_id,
        subject_id=subject,
        source_system="telephony",
        event_time=when,
        recording_id=recording_id,
        system="call-recorder",
    )
