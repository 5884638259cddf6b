"""The chaos run's traffic: a seeded plan of customer stories, published on schedule.

Each customer's story, under the compressed demo policy (recordings kept 20 s,
legal-obligation data 60 s after contract end), so that deletions come due
while the faults happen:

- a contract starts; billing (legal obligation) and CRM correspondence are
  registered against it; 60% also get a purchased-list marketing record;
- one to three calls are recorded (10% for the processor-mode client
  ``demo-client``, whose recordings are kept 60 s);
- 40% opt out of marketing; 50% end their contract;
- 20% ask for erasure; 15% ask for access and send a passport and a recent
  utility bill (a third of them before the request, as a placeholder).

Stories start evenly over the first ``traffic_s - STORY_S`` seconds, so every
event is due before the traffic window ends. Event times are the planned wall
times; the plan is a pure function of the seed and the start time.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from agents.rights.deadlines import uk_date
from schemas.base import Channel, DataCategory, DataSource, DocumentType, LegalBasis
from schemas.events import (
    AccessRequested,
    CallRecorded,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    Event,
    IdentityEvidenceReceived,
    MarketingOptOutReceived,
    RecordRegistered,
)
from streams.codec import Codec
from streams.topics import TopicNames

# The longest story, from contract start to its last event.
STORY_S = 20.0
PROCESSOR_CLIENT = "demo-client"


@dataclass(frozen=True)
class Planned:
    at: float  # seconds after the traffic start
    event: Event


def plan(customers: int, traffic_s: float, start: datetime, seed: int) -> list[Planned]:
    """Every event of the run, in publication order."""
    rng = random.Random(seed)
    ids = count(1)
    window = max(1.0, traffic_s - STORY_S)
    out: list[Planned] = []
    for n in range(customers):
        out += _story(rng, ids, n, window * n / customers, start)
    return sorted(out, key=lambda p: p.at)


def _story(
    rng: random.Random, ids: count[int], n: int, t0: float, start: datetime
) -> list[Planned]:
    subject = f"cust-{n:05d}"
    out: list[Planned] = []

    def at(offset: float, event_type: type[Event], publisher: str, **fields: Any) -> None:
        when = t0 + offset
        out.append(
            Planned(
                when,
                event_type(
                    event_id=f"ev-{next(ids)}",
                    subject_id=subject,
                    source_system=publisher,
                    event_time=start + timedelta(seconds=when),
                    **fields,
                ),
            )
        )

    def record(
        system: str, category: DataCategory, basis: LegalBasis, purpose: str, **kw: Any
    ) -> dict[str, Any]:
        return {
            "record_id": f"record-{next(ids)}",
            "system": system,
            "category": category,
            "legal_basis": basis,
            "purpose": purpose,
            "fields": ["name", "phone"],
            **kw,
        }

    contract = f"contract-{n:05d}"
    at(0.0, ContractStarted, "billing", contract_id=contract)
    at(
        0.2,
        RecordRegistered,
        "billing",
        **record(
            "billing-db",
            DataCategory.BILLING,
            LegalBasis.LEGAL_OBLIGATION,
            "billing-accounting",
            source=DataSource.SUBJECT,
            contract_id=contract,
        ),
    )
    at(
        0.4,
        RecordRegistered,
        "crm",
        **record(
            "crm",
            DataCategory.CORRESPONDENCE,
            LegalBasis.CONTRACT,
            "service-delivery",
            source=DataSource.SUBJECT,
            contract_id=contract,
        ),
    )
    if rng.random() < 0.6:
        at(
            0.6,
            RecordRegistered,
            "marketing",
            **record(
                "marketing-platform",
                DataCategory.PURCHASED_LIST,
                LegalBasis.LEGITIMATE_INTERESTS,
                "sales-marketing",
                source=DataSource.LIST_BROKER,
            ),
        )
    for k in range(rng.randint(1, 3)):
        processor = rng.random() < 0.1
        at(
            1.0 + k,
            CallRecorded,
            "telephony",
            recording_id=f"rec-{next(ids)}",
            system="call-recorder",
            duration_seconds=rng.randint(30, 900),
            **({"controller_id": PROCESSOR_CLIENT} if processor else {}),
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
        at(rng.uniform(8, STORY_S), ErasureRequested, "privacy-desk", request_id=f"erasure-{n:05d}")
    if rng.random() < 0.15:
        request = f"access-{n:05d}"
        asked = rng.uniform(2, STORY_S - 2)
        evidence = asked + (
            rng.uniform(-1.5, -0.5) if rng.random() < 1 / 3 else rng.uniform(0.5, 2)
        )
        at(asked, AccessRequested, "privacy-desk", request_id=request)
        received = start + timedelta(seconds=t0 + evidence)
        at(
            evidence,
            IdentityEvidenceReceived,
            "privacy-desk",
            request_id=request,
            evidence_id=f"passport-{n:05d}",
            document_type=DocumentType.PASSPORT,
        )
        at(
            evidence + 0.1,
            IdentityEvidenceReceived,
            "privacy-desk",
            request_id=request,
            evidence_id=f"bill-{n:05d}",
            document_type=DocumentType.UTILITY_BILL,
            issued_on=uk_date(received) - timedelta(days=10),
        )
    return out


class TrafficThread(threading.Thread):
    """Publishes a plan on schedule through an idempotent producer; counts what the
    broker confirmed. ``publish_now`` sends extra events (probes) at once."""

    def __init__(
        self,
        planned: list[Planned],
        producer_config: dict[str, Any],
        names: TopicNames,
        codec: Codec,
        started: float,
    ) -> None:
        super().__init__(name="chaos-traffic", daemon=True)
        self.planned = planned
        self.names = names
        self.codec = codec
        self.started = started  # time.monotonic() of the plan's t = 0
        self.producer = Producer(producer_config)
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.confirmed: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.published = 0
        self.finished: float | None = None  # time.monotonic() the plan was all sent

    def run(self) -> None:
        for item in self.planned:
            delay = self.started + item.at - time.monotonic()
            if delay > 0 and self._halt.wait(delay):
                return
            self.publish_now(item.event)
        self.finished = time.monotonic()
        self.flush(120)

    def stop(self) -> None:
        self._halt.set()

    def publish_now(self, event: Event) -> None:
        kind = type(event).__name__

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with self._lock:
                (self.failed if err is not None else self.confirmed)[kind] += 1

        value = self.codec.encode(event)
        with self._lock:
            self.published += 1
        while True:
            try:
                self.producer.produce(
                    self.names.input(event.source_system),
                    key=event.subject_id.encode(),
                    value=value,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # local queue full (a broker is down): let it drain
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout: float) -> int:
        return int(self.producer.flush(timeout))
