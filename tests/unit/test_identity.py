"""Identity evidence before data is released (N12)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from agents.rights.identity import (
    MISSING_PHOTO_ID,
    MISSING_SUPPORTING,
    EvidenceItem,
    bill_cutoff,
    evaluate_identity,
)
from schemas.base import DocumentType
from schemas.events import IdentityEvidenceReceived

PASSPORT = DocumentType.PASSPORT
LICENCE = DocumentType.DRIVING_LICENCE
BIRTH = DocumentType.BIRTH_CERTIFICATE
BILL = DocumentType.UTILITY_BILL
OTHER = DocumentType.OTHER

# Received on 15 May 2024 (UK): a bill counts when issued on or after 15 February.
RECEIVED = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)


def ev(
    evidence_id: str,
    kind: DocumentType,
    issued_on: date | None = None,
    received_at: datetime = RECEIVED,
) -> EvidenceItem:
    return EvidenceItem(
        evidence_id=evidence_id, document_type=kind, received_at=received_at, issued_on=issued_on
    )


@pytest.mark.parametrize(
    ("evidence", "photo_id", "supporting"),
    [
        pytest.param([ev("p", PASSPORT), ev("b", BIRTH)], "p", "b", id="passport+birth"),
        pytest.param([ev("d", LICENCE), ev("b", BIRTH)], "d", "b", id="licence+birth"),
        pytest.param(
            [ev("p", PASSPORT), ev("u", BILL, date(2024, 4, 1))], "p", "u", id="passport+bill"
        ),
        pytest.param(
            [ev("d", LICENCE), ev("u", BILL, date(2024, 2, 15))],
            "d",
            "u",
            id="bill-exactly-three-months-old",
        ),
        pytest.param(
            [ev("p", PASSPORT), ev("u", BILL, date(2024, 5, 15))], "p", "u", id="bill-same-day"
        ),
        pytest.param([ev("p", PASSPORT), ev("d", LICENCE)], "p", "d", id="other-kind-of-photo-id"),
        pytest.param(
            [ev("p", PASSPORT), ev("d", LICENCE), ev("b", BIRTH)],
            "p",
            "b",
            id="non-photo-supporting-preferred",
        ),
        pytest.param(
            [ev("b", BIRTH), ev("x", OTHER), ev("p", PASSPORT)],
            "p",
            "b",
            id="order-does-not-matter",
        ),
    ],
)
def test_verified(evidence: list[EvidenceItem], photo_id: str, supporting: str) -> None:
    verdict = evaluate_identity(evidence)
    assert verdict.verified
    assert verdict.missing == []
    assert (verdict.photo_id, verdict.supporting) == (photo_id, supporting)


@pytest.mark.parametrize(
    ("evidence", "missing", "rejected"),
    [
        pytest.param([], [MISSING_PHOTO_ID, MISSING_SUPPORTING], {}, id="nothing"),
        pytest.param([ev("p", PASSPORT)], [MISSING_SUPPORTING], {}, id="passport-only"),
        pytest.param([ev("d", LICENCE)], [MISSING_SUPPORTING], {}, id="licence-only"),
        pytest.param(
            [ev("p1", PASSPORT), ev("p2", PASSPORT)],
            [MISSING_SUPPORTING],
            {},
            id="two-passports-count-once",
        ),
        pytest.param([ev("b", BIRTH)], [MISSING_PHOTO_ID], {}, id="birth-only"),
        pytest.param(
            [ev("b", BIRTH), ev("u", BILL, date(2024, 5, 1))],
            [MISSING_PHOTO_ID],
            {},
            id="no-photo-id",
        ),
        pytest.param(
            [ev("p", PASSPORT), ev("u", BILL, date(2024, 2, 14))],
            [MISSING_SUPPORTING],
            {"u": "older than three months"},
            id="bill-three-months-and-a-day",
        ),
        pytest.param(
            [ev("p", PASSPORT), ev("u", BILL)],
            [MISSING_SUPPORTING],
            {"u": "no issue date"},
            id="undated-bill",
        ),
        pytest.param(
            [ev("p", PASSPORT), ev("u", BILL, date(2024, 5, 16))],
            [MISSING_SUPPORTING],
            {"u": "after it was received"},
            id="bill-dated-after-receipt",
        ),
        pytest.param(
            [ev("p", PASSPORT), ev("x", OTHER)],
            [MISSING_SUPPORTING],
            {"x": "not an accepted form"},
            id="other-document",
        ),
        pytest.param(
            [ev("x", OTHER)],
            [MISSING_PHOTO_ID, MISSING_SUPPORTING],
            {"x": "not an accepted form"},
            id="other-only",
        ),
        pytest.param(
            [ev("u", BILL, date(2023, 1, 1))],
            [MISSING_PHOTO_ID, MISSING_SUPPORTING],
            {"u": "older than three months"},
            id="stale-bill-only",
        ),
    ],
)
def test_not_verified(
    evidence: list[EvidenceItem], missing: list[str], rejected: dict[str, str]
) -> None:
    verdict = evaluate_identity(evidence)
    assert not verdict.verified
    assert verdict.missing == missing
    assert {eid for eid, _ in verdict.rejected} == set(rejected)
    for eid, reason in verdict.rejected:
        assert rejected[eid] in reason
    assert (verdict.photo_id, verdict.supporting) == (None, None)


def test_rejections_are_reported_even_when_verified() -> None:
    verdict = evaluate_identity([ev("p", PASSPORT), ev("b", BIRTH), ev("u", BILL), ev("x", OTHER)])
    assert verdict.verified
    assert [eid for eid, _ in verdict.rejected] == ["u", "x"]


@pytest.mark.parametrize(
    ("received_at", "issued_on", "counts"),
    [
        # Month-end clamp: received 31 May 2024 -> on or after 29 February.
        (datetime(2024, 5, 31, 10, tzinfo=UTC), date(2024, 2, 29), True),
        (datetime(2024, 5, 31, 10, tzinfo=UTC), date(2024, 2, 28), False),
        # 23:30 UTC on 14 May is 00:30 BST on 15 May: the UK day sets the cutoff.
        (datetime(2024, 5, 14, 23, 30, tzinfo=UTC), date(2024, 2, 15), True),
        (datetime(2024, 5, 14, 23, 30, tzinfo=UTC), date(2024, 2, 14), False),
        # In winter: received 15 January -> on or after 15 October of the year before.
        (datetime(2024, 1, 15, 23, 30, tzinfo=UTC), date(2023, 10, 15), True),
        (datetime(2024, 1, 15, 23, 30, tzinfo=UTC), date(2023, 10, 14), False),
    ],
)
def test_bill_age_is_judged_on_the_uk_day_received(
    received_at: datetime, issued_on: date, counts: bool
) -> None:
    verdict = evaluate_identity(
        [ev("p", PASSPORT, received_at=received_at), ev("u", BILL, issued_on, received_at)]
    )
    assert verdict.verified is counts
    assert (bill_cutoff(received_at) <= issued_on) is counts


def test_duplicate_evidence_ids_count_once() -> None:
    verdict = evaluate_identity([ev("p", PASSPORT), ev("x", OTHER), ev("x", OTHER)])
    assert [eid for eid, _ in verdict.rejected] == ["x"]


def test_from_event() -> None:
    event = IdentityEvidenceReceived(
        event_id="evt-1",
        subject_id="cust-1",
        source_system="privacy-desk",
        event_time=RECEIVED,
        request_id="req-1",
        evidence_id="ev-9",
        document_type=BILL,
        issued_on=date(2024, 3, 1),
    )
    assert EvidenceItem.from_event(event) == ev("ev-9", BILL, date(2024, 3, 1))
