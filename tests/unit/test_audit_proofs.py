"""Proofs spread over several audit events are checked for completeness."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.audit.chain import ChainHead, link
from agents.audit.proofs import ProofCheck
from agents.rules import limits
from agents.rules.auditing import MAX_DETAIL, AuditEntry
from agents.rules.context import Ctx
from agents.rules.testing import Harness, seed_records
from agents.store.memory import MemoryPartition, MemoryStore
from schemas.audit import AuditEvent
from schemas.events import ErasureRequested
from tests.unit.builders import NOTICE

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def _events(entries: list[AuditEntry]) -> list[AuditEvent]:
    head = ChainHead.genesis()
    out = []
    for entry in entries:
        event = link(head, entry, partition=0, key=b"k", decided_at=T0)
        head = ChainHead.of(event)
        out.append(event)
    return out


def _check(events: list[AuditEvent]) -> list[str]:
    check = ProofCheck()
    for event in events:
        check.add(event)
    return check.problems()


def _long_entry() -> list[AuditEntry]:
    ctx = Ctx.open(
        MemoryPartition(), subject_id="cust-1", policy=NOTICE, now=T0, event_time=T0,
        event_ids_in=["evt-1"],
    )  # fmt: skip
    ids = [f"record-with-a-long-identifier-{n:06d}" for n in range(5_000)]
    ctx.audit("N9.erasure", "erasure-decided", request_id="req-1", records_erased=ids)
    return ctx.out_audit


def test_a_long_list_is_split_over_parts_without_losing_an_id() -> None:
    entries = _long_entry()
    assert len(entries) > 1
    assert all(len(v) <= MAX_DETAIL for e in entries for v in e.details.values())
    named = {
        r
        for e in entries
        for k, v in e.details.items()
        if k.startswith("records-erased")
        for r in v.split(",")
    }
    assert len(named) == 5_000
    assert _check(_events(entries)) == []


def test_a_missing_or_altered_part_is_named() -> None:
    events = _events(_long_entry())
    assert "missing" in _check(events[:1] + events[2:])[0]
    forged = events[1].model_copy(update={"details": {**events[1].details, "request-id": "x"}})
    assert "do not match" in _check([events[0], forged, *events[2:]])[0]


def test_an_erasure_in_pages_is_complete_only_with_every_page() -> None:
    store = MemoryStore()
    seed_records(store, NOTICE, T0, "cust-1", 2 * limits.PAGE + 1)
    h = Harness(NOTICE, T0, store=store)
    events = _events(h.send(h.event(ErasureRequested, request_id="req-1")).audit)
    assert _check(events) == []
    pages = [e for e in events if e.decision == "erasure-decided"]
    assert [e.details["page"] for e in pages] == ["1", "2", "3"]
    assert pages[-1].details["pages"] == "3"
    without_page_2 = [e for e in events if e is not pages[1]]
    assert _check(without_page_2) == ["erasure-decided req-1: page(s) [2] of 3 missing"]
