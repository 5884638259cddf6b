"""Shared field types for every message the pipeline reads or writes.

Validation here goes beyond what Avro can say: identifiers are well formed,
strings are bounded, times are timezone-aware UTC and not absurdly far in the
future. Avro carries the shape; these types carry the meaning.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationInfo

# Identifiers are opaque tokens chosen by the publishing system. They must not
# be e-mail addresses or names: subjects are referred to by a customer or
# account id, never by their personal data.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
# System and controller ids appear in topic names and metric labels, so they
# are restricted to lower-case slugs.
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
LongText = Annotated[str, StringConstraints(max_length=500_000)]

# How far ahead of the receiving clock an event time may be. Publishers' clocks
# drift; a day covers that, and anything beyond is a bug or an attack that
# would schedule deletions in the wrong place.
MAX_FUTURE_SKEW = timedelta(days=1)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (UTC)")
    value = value.astimezone(UTC)
    # Avro timestamp-millis keeps milliseconds only; truncating here keeps the
    # model equal to what comes back off the wire.
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def _not_far_future(value: datetime, info: ValidationInfo) -> datetime:
    # The decoder passes the injected clock's reading as context["now"]; the
    # wall clock is only a fallback for models built by hand.
    context = info.context if isinstance(info.context, dict) else {}
    now = context.get("now") or datetime.now(UTC)
    if value > now + MAX_FUTURE_SKEW:
        raise ValueError(f"timestamp {value.isoformat()} is more than a day in the future")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
EventTime = Annotated[datetime, AfterValidator(_utc), AfterValidator(_not_far_future)]


class Frozen(BaseModel):
    """Base for every message model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class DataCategory(StrEnum):
    """What kind of personal data a record is (N3)."""

    FORMS_SURVEYS = "forms_surveys"
    CORRESPONDENCE = "correspondence"
    CALL_RECORDING = "call_recording"
    CALL_RECORDS = "call_records"
    WEBSITE_VISITS = "website_visits"
    WEB_BEHAVIOUR_STATS = "web_behaviour_stats"
    TRANSACTIONS = "transactions"
    CONTRACT = "contract"
    BILLING = "billing"
    THIRD_PARTY_PUBLIC = "third_party_public"
    CREDIT_REFERENCE = "credit_reference"
    PURCHASED_LIST = "purchased_list"
    MARKETING_PROFILE = "marketing_profile"
    IDENTITY_DOCUMENTS = "identity_documents"


class DataSource(StrEnum):
    """Where a record came from (N3, N11: the source when not the subject)."""

    SUBJECT = "subject"
    OBSERVED = "observed"
    PUBLIC_SOURCE = "public_source"
    SUPPLIER = "supplier"
    CREDIT_REFERENCE_AGENCY = "credit_reference_agency"
    LIST_BROKER = "list_broker"
    CLIENT = "client"


class LegalBasis(StrEnum):
    """Lawful basis a record is processed under (N4)."""

    LEGITIMATE_INTERESTS = "legitimate_interests"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    CONSENT = "consent"


class Channel(StrEnum):
    """Marketing channels an opt-out can name (N1)."""

    EMAIL = "email"
    PHONE = "phone"
    SMS = "sms"
    POST = "post"
    ALL = "all"


class DocumentType(StrEnum):
    """Identity evidence kinds the notice names (N12)."""

    PASSPORT = "passport"
    DRIVING_LICENCE = "driving_licence"
    BIRTH_CERTIFICATE = "birth_certificate"
    UTILITY_BILL = "utility_bill"
    OTHER = "other"


class RequestType(StrEnum):
    """Data-subject rights requests and complaints that carry a deadline (N9, N13)."""

    ACCESS = "access"
    ERASURE = "erasure"
    RECTIFICATION = "rectification"
    RESTRICTION = "restriction"
    PORTABILITY = "portability"
    OBJECTION = "objection"
    COMPLAINT = "complaint"


class ObjectionKind(StrEnum):
    DIRECT_MARKETING = "direct_marketing"
    AUTOMATED_PROCESSING = "automated_processing"
