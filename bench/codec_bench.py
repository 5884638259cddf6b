"""Codec throughput per message type, single core.

    .venv/bin/python bench/codec_bench.py [--seconds 0.5] [--registry]

For each record type: encode (model -> framed bytes) and decode (bytes ->
validated model, including key check) in messages per second, plus the
encoded size. Sample messages are realistic but small; ``LegalHoldPlaced``,
``CommandAck`` and ``RequestResponse`` carry lists.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.audit import AuditEvent
from schemas.base import Frozen
from schemas.commands import Command, CommandAck, ExportedRecord
from schemas.deadletter import DeadLetter
from schemas.events import (
    INPUT_EVENTS,
    CallRecorded,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    MarketingOptOutReceived,
    RecordRegistered,
    RectificationRequested,
)
from schemas.internal import DueTick
from schemas.responses import KeptItem, RequestResponse
from streams.codec import Codec

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def samples() -> list[Frozen]:
    base: dict[str, Any] = {
        "event_id": "evt-0001-abcdef",
        "subject_id": "cust-000123456",
        "source_system": "telephony",
        "event_time": NOW - timedelta(minutes=5),
    }
    out: list[Frozen] = [
        CallRecorded(**base, recording_id="rec-998877", system="recorder", duration_seconds=312),
        RecordRegistered(
            **base,
            record_id="crm-rec-1",
            system="crm",
            category="correspondence",
            source="subject",
            legal_basis="contract",
            purpose="account-management",
            contract_id="ctr-55",
            fields=["email", "phone", "postal-address"],
        ),
        MarketingOptOutReceived(**base, channels=["email", "sms"]),
        RectificationRequested(
            **base, request_id="req-1", corrections={"email": "new@example.invalid"}
        ),
        IdentityEvidenceReceived(
            **base,
            request_id="req-1",
            evidence_id="ev-1",
            document_type="utility_bill",
            issued_on=date(2026, 5, 1),
        ),
        LegalHoldPlaced(
            **base,
            hold_id="hold-1",
            reason="litigation",
            case_reference="CASE-2026-001",
            categories=["call_recording"],
            record_ids=[f"rec-{i}" for i in range(10)],
        ),
    ]
    # The remaining event types are small; one representative of each.
    simple_extra: dict[str, dict[str, Any]] = {
        "ContractStarted": {"contract_id": "ctr-1"},
        "ContractEnded": {"contract_id": "ctr-1"},
        "ConsentGiven": {"purpose": "newsletter"},
        "ConsentWithdrawn": {"purpose": "newsletter"},
        "ErasureRequested": {"request_id": "req-2"},
        "AccessRequested": {"request_id": "req-3"},
        "RestrictionRequested": {"request_id": "req-4", "reason": "accuracy contested"},
        "RestrictionLifted": {"request_id": "req-4"},
        "PortabilityRequested": {"request_id": "req-5"},
        "ObjectionReceived": {"request_id": "req-6", "kind": "direct_marketing"},
        "LegalHoldReleased": {"hold_id": "hold-1"},
        "ComplaintReceived": {"complaint_id": "cmp-1", "summary": "late answer"},
        "RequestExtended": {"request_id": "req-7", "months": 2, "reason": "complex"},
        "RequestRefused": {"request_id": "req-8", "reason": "manifestly unfounded"},
    }
    for model in INPUT_EVENTS:
        if model.__name__ in simple_extra:
            out.append(model(**base, **simple_extra[model.__name__]))
    out += [
        Command(
            command_id="cmd-" + "a" * 32,
            action="delete",
            target_system="crm",
            subject_id="cust-000123456",
            controller_id="smartcomms",
            record_ids=["crm-rec-1", "crm-rec-2"],
            categories=["correspondence"],
            rule_id="N6.contract-end",
            request_id="req-2",
            issued_at=NOW,
            deadline=NOW + timedelta(days=30),
            policy_version="2026.1",
        ),
        CommandAck(
            command_id="cmd-" + "a" * 32,
            subject_id="cust-000123456",
            system="crm",
            outcome="done",
            acked_at=NOW,
            exported=[
                ExportedRecord(
                    record_id=f"crm-rec-{i}",
                    category="correspondence",
                    provided_by_subject=True,
                    fields={"email": "x@example.invalid", "phone": "+44 20 0000 0000"},
                )
                for i in range(5)
            ],
        ),
        AuditEvent(
            audit_id="aud-1",
            partition=3,
            sequence=1234,
            prev_hash="0" * 64,
            hash="f" * 64,
            subject_ref="a" * 64,
            controller_id="smartcomms",
            rule_id="N7.recording-30d",
            policy_version="2026.1",
            decision="delete",
            event_ids_in=["evt-1"],
            command_ids_out=["cmd-1", "cmd-2"],
            event_time=NOW,
            decided_at=NOW,
            details={"system": "recorder"},
        ),
        RequestResponse(
            response_id="resp-1",
            request_id="req-2",
            request_type="erasure",
            subject_id="cust-000123456",
            controller_id="smartcomms",
            status="partially_refused",
            reasons=["billing records kept for 7 years (legal obligation)"],
            kept=[
                KeptItem(record_id=f"bill-{i}", system="billing", category="billing", reason="N6")
                for i in range(5)
            ],
            received_at=NOW,
            due_at=NOW + timedelta(days=31),
            issued_at=NOW,
        ),
        DueTick(subject_id="cust-000123456", due_at=NOW, sent_at=NOW),
        DeadLetter(
            topic="lifecycle.in.crm",
            partition=2,
            offset=123456,
            original_key=b"cust-000123456",
            original_value=b"\xc3\x01" + b"\x00" * 200,
            reason_class="unknown_schema",
            reason="no schema with fingerprint 0000000000000000",
            failed_at=NOW,
            original_value_size=210,
        ),
    ]
    return out


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over at least ``seconds`` (after a warm-up)."""
    for _ in range(200):
        fn()
    count, batch = 0, 200
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        count += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


class _FakeRegistry:
    def __init__(self) -> None:
        self.schemas: dict[int, Any] = {}

    def register_schema(self, subject_name: str, schema: Any) -> int:
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = schema
        return schema_id

    def get_schema(self, schema_id: int) -> Any:
        return self.schemas[schema_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    parser.add_argument("--registry", action="store_true", help="Confluent framing (fake registry)")
    args = parser.parse_args()
    codec = Codec(registry=_FakeRegistry()) if args.registry else Codec()
    framing = "confluent" if args.registry else "single-object"
    print(f"codec throughput, {framing} framing, {args.seconds}s per cell, single core")
    print(f"{'message type':<26} {'bytes':>6} {'encode msg/s':>13} {'decode msg/s':>13}")
    total_enc = total_dec = 0.0
    rows = samples()
    for model in rows:
        data = codec.encode(model)
        key = codec.key_for(model)
        assert codec.decode(data, key, now=NOW) == model
        enc = rate(lambda m=model: codec.encode(m), args.seconds)  # type: ignore[misc]
        dec = rate(lambda d=data, k=key: codec.decode(d, k, now=NOW), args.seconds)  # type: ignore[misc]
        total_enc += enc
        total_dec += dec
        print(f"{type(model).__name__:<26} {len(data):>6} {enc:>13,.0f} {dec:>13,.0f}")
    n = len(rows)
    print(f"{'mean':<26} {'':>6} {total_enc / n:>13,.0f} {total_dec / n:>13,.0f}")


if __name__ == "__main__":
    main()
