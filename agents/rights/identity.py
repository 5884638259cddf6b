"""Identity verification before personal data is released (N12).

The notice: "a copy of your driving licence; passport; birth certificate; and a
utility bill not older than three months. A minimum of one piece of
photographic ID listed above and a supporting document is required."

Decisions on what the notice leaves open:

* **Photographic ID** is a passport or a driving licence.
* **Supporting document** is any *other* accepted document: a birth
  certificate, a utility bill not older than three months, or a photographic ID
  of the *other* type (a driving licence supports a passport and vice versa).
  One item never serves as both; two items of the same photographic type
  (e.g. two passport scans) count once, as they are most likely pages of the
  same document.
* **"Not older than three months"** is calendar-month arithmetic on the UK day
  the evidence was received: a bill counts when issued on or after that day
  minus three calendar months (clamped to the month end: received 31 May ->
  on or after 28/29 February). A bill issued exactly three months before
  counts; one issued a day earlier does not. Age is judged when the evidence
  was received, not when it is evaluated, so a request that waited does not
  lose a bill that was valid on arrival.
* A utility bill without an issue date, or dated after the day it was
  received, is rejected with a reason; so is any ``other`` document.
* Evidence is deduplicated by ``evidence_id`` (redelivery is harmless); the
  first item with an id wins. The caller passes only the evidence for the one
  request being judged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from agents.rights.deadlines import add_calendar_months, uk_date
from schemas.base import DocumentType
from schemas.events import IdentityEvidenceReceived

__all__ = [
    "BILL_MAX_AGE_MONTHS",
    "MISSING_PHOTO_ID",
    "MISSING_SUPPORTING",
    "PHOTO_ID_TYPES",
    "EvidenceItem",
    "IdentityVerdict",
    "bill_cutoff",
    "evaluate_identity",
]

BILL_MAX_AGE_MONTHS = 3
PHOTO_ID_TYPES = frozenset({DocumentType.PASSPORT, DocumentType.DRIVING_LICENCE})

MISSING_PHOTO_ID = "one photographic ID (passport or driving licence)"
MISSING_SUPPORTING = (
    "one supporting document (birth certificate, a utility bill not older than three "
    "months, or a photographic ID of the other kind)"
)
_ACCEPTED = (
    "accepted documents are a passport, a driving licence, a birth certificate "
    "and a utility bill not older than three months"
)


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One identity document as received by the privacy desk."""

    evidence_id: str
    document_type: DocumentType
    received_at: datetime
    issued_on: date | None = None

    @classmethod
    def from_event(cls, event: IdentityEvidenceReceived) -> EvidenceItem:
        return cls(
            evidence_id=event.evidence_id,
            document_type=event.document_type,
            received_at=event.event_time,
            issued_on=event.issued_on,
        )


@dataclass(frozen=True, slots=True)
class IdentityVerdict:
    """Whether identity is verified; if not, what is missing and what was rejected.

    ``missing`` is requester-facing text; ``rejected`` pairs an evidence id with
    the reason it does not count; ``photo_id`` and ``supporting`` name the
    evidence ids relied on when verified.
    """

    verified: bool
    missing: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    photo_id: str | None = None
    supporting: str | None = None


def bill_cutoff(received_at: datetime) -> date:
    """Earliest issue date a utility bill may carry to count (UK day of receipt - 3 months)."""
    return add_calendar_months(uk_date(received_at), -BILL_MAX_AGE_MONTHS)


def _rejection(item: EvidenceItem) -> str | None:
    """Why ``item`` does not count at all, or None when it is acceptable."""
    if item.document_type is DocumentType.OTHER:
        return f"not an accepted form of identification; {_ACCEPTED}"
    if item.document_type is not DocumentType.UTILITY_BILL:
        return None
    if item.issued_on is None:
        return "utility bill has no issue date, so its age cannot be checked"
    received = uk_date(item.received_at)
    if item.issued_on > received:
        return (
            f"utility bill is dated {item.issued_on.isoformat()}, "
            f"after it was received on {received.isoformat()}"
        )
    cutoff = bill_cutoff(item.received_at)
    if item.issued_on < cutoff:
        return (
            f"utility bill issued {item.issued_on.isoformat()} was older than three months "
            f"when received on {received.isoformat()} (must be issued on or after "
            f"{cutoff.isoformat()})"
        )
    return None


def evaluate_identity(evidence: Iterable[EvidenceItem]) -> IdentityVerdict:
    """Judge a request's identity evidence against the notice's rule (N12)."""
    seen: set[str] = set()
    accepted: list[EvidenceItem] = []
    rejected: list[tuple[str, str]] = []
    for item in evidence:
        if item.evidence_id in seen:
            continue
        seen.add(item.evidence_id)
        reason = _rejection(item)
        if reason is None:
            accepted.append(item)
        else:
            rejected.append((item.evidence_id, reason))

    # Try every photo ID against every other acceptable item; a pairing with a
    # non-photo supporting document is preferred so that the choice is stable.
    photos = [i for i in accepted if i.document_type in PHOTO_ID_TYPES]
    best: tuple[EvidenceItem, EvidenceItem] | None = None
    for photo in photos:
        for support in accepted:
            if support.document_type is photo.document_type:
                continue  # the same item, or the same kind of photo ID
            if best is None or (
                best[1].document_type in PHOTO_ID_TYPES
                and support.document_type not in PHOTO_ID_TYPES
            ):
                best = (photo, support)

    if best is not None:
        return IdentityVerdict(
            verified=True,
            rejected=rejected,
            photo_id=best[0].evidence_id,
            supporting=best[1].evidence_id,
        )
    # No pairing: either no photo ID at all, or nothing else to support it.
    missing: list[str] = []
    if not photos:
        missing.append(MISSING_PHOTO_ID)
    if photos or all(i.document_type in PHOTO_ID_TYPES for i in accepted):
        missing.append(MISSING_SUPPORTING)
    return IdentityVerdict(verified=False, missing=missing, rejected=rejected)
