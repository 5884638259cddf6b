"""Traffic simulator for the demo: telephony, billing, CRM, marketing and the privacy desk.

Each simulated customer gets a realistic story: calls recorded, records
registered in the systems that hold them, a contract that starts and (for
some) ends, and now and then an opt-out, a legal hold, an erasure or access
request or a complaint for the privacy desk.
Stories are a pure function of a seed and the clock, so a run can be repeated.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count

from schemas.base import Channel, DataCategory, DataSource, DocumentType, LegalBasis
from schemas.events import (
    AccessRequested,
    CallRecorded,
    ComplaintReceived,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    Event,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    MarketingOptOutReceived,
    RecordRegistered,
)


@dataclass(frozen=True)
class Scheduled:
    """An event to publish once ``at`` has passed."""

    at: datetime
    event: Event


class Simulator:
    def __init__(self, seed: int = 7) -> None:
        # Reproducible traffic, not security: a seeded PRNG is the point.
        self.rng = random.Random(seed)  # noqa: S311
        self._ids = count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def customer(self, start: datetime) -> list[Scheduled]:
        """One customer's story, as events scheduled from ``start``."""
        rng = self.rng
        subject = self._id("cust")
        out: list[Scheduled] = []

        def at(seconds: float, event_type: type[Event], publisher: str, **fields: object) -> Event:
            when = start + timedelta(seconds=seconds)
            event = event_type(
                event_id=self._id("ev"),
                subject_id=subject,
                source_system=publisher,
                event_time=when,
                **fields,
            )
            out.append(Scheduled(when, event))
            return event

        contract = self._id("contract")
        at(0, ContractStarted, "billing", contract_id=contract)
        at(
            0.2,
            RecordRegistered,
            "billing",
            **self._record(
                "billing-db",
                DataCategory.BILLING,
                LegalBasis.LEGAL_OBLIGATION,
                "billing-accounting",
                contract,
            ),
        )
        at(
            0.4,
            RecordRegistered,
            "crm",
            **self._record(
                "crm",
                DataCategory.CORRESPONDENCE,
                LegalBasis.CONTRACT,
                "service-delivery",
                contract,
            ),
        )
        if rng.random() < 0.6:
            at(
                0.6,
                RecordRegistered,
                "marketing",
                **self._record(
                    "marketing-platform",
                    DataCategory.PURCHASED_LIST,
                    LegalBasis.LEGITIMATE_INTERESTS,
                    "sales-marketing",
                    None,
                    DataSource.LIST_BROKER,
                ),
            )
        for n in range(rng.randint(1, 3)):
            at(
                1 + n,
                CallRecorded,
                "telephony",
                recording_id=self._id("rec"),
                system="call-recorder",
                duration_seconds=rng.randint(30, 900),
            )
        if rng.random() < 0.15:
            at(
                2,
                LegalHoldPlaced,
                "privacy-desk",
                hold_id=self._id("hold"),
                reason="dispute under investigation",
                case_reference=self._id("CASE"),
                categories=[DataCategory.CALL_RECORDING],
            )
        if rng.random() < 0.4:
            at(
                rng.uniform(3, 10),
                MarketingOptOutReceived,
                "marketing",
                channels=[rng.choice(list(Channel))],
            )
        if rng.random() < 0.5:
            at(rng.uniform(5, 15), ContractEnded, "billing", contract_id=contract)
        if rng.random() < 0.2:
            at(rng.uniform(8, 20), ErasureRequested, "privacy-desk", request_id=self._id("req"))
        # Work for the privacy desk: complaints wait for an answer from the desk, and
        # access requests wait for identity evidence, which arrives for some.
        if rng.random() < 0.1:
            at(
                rng.uniform(3, 20),
                ComplaintReceived,
                "crm",
                complaint_id=self._id("complaint"),
                summary="Unhappy with how my data was handled",
            )
        if rng.random() < 0.1:
            request_id, asked = self._id("access"), rng.uniform(3, 20)
            at(asked, AccessRequested, "privacy-desk", request_id=request_id)
            if rng.random() < 0.5:
                for n, document in enumerate(
                    (DocumentType.PASSPORT, DocumentType.BIRTH_CERTIFICATE)
                ):
                    at(
                        asked + 5 + n,
                        IdentityEvidenceReceived,
                        "privacy-desk",
                        request_id=request_id,
                        evidence_id=self._id("evidence"),
                        document_type=document,
                    )
        return sorted(out, key=lambda s: s.at)

    def _record(
        self,
        system: str,
        category: DataCategory,
        basis: LegalBasis,
        purpose: str,
        contract: str | None,
        source: DataSource = DataSource.SUBJECT,
    ) -> dict[str, object]:
        return {
            "record_id": self._id("record"),
            "system": system,
            "category": category,
            "source": source,
            "legal_basis": basis,
            "purpose": purpose,
            "contract_id": contract,
            "fields": ["name", "phone"],
        }

    def stream(self, start: datetime, every_s: float) -> Iterator[Scheduled]:
        """An endless merge of customers, a new one every ``every_s`` seconds."""
        pending: list[Scheduled] = []
        n = 0
        while True:
            pending.extend(self.customer(start + timedelta(seconds=n * every_s)))
            n += 1
            pending.sort(key=lambda s: s.at)
            horizon = start + timedelta(seconds=n * every_s)
            while pending and pending[0].at <= horizon:
                yield pending.pop(0)
