"""A subject holding a great deal costs what one holding little does, per event.

Work over all of a subject's records goes a page at a time; commands and their
audit proofs are chunks; an event reads the entries it touches, not the
history (counted here, not timed); a record registered again is deleted again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from agents.rules import limits
from agents.rules.testing import Harness, seed_records
from agents.store.memory import MemoryPartition, MemoryStore
from schemas.base import DataCategory, LegalBasis
from schemas.commands import Action, command_id
from schemas.events import (
    CallRecorded,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    LegalHoldPlaced,
    LegalHoldReleased,
    RestrictionLifted,
    RestrictionRequested,
)
from schemas.responses import ResponseStatus
from tests.unit.builders import NOTICE, register

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
MANY = 2 * limits.PAGE + 37  # three pages


class CountingPartition(MemoryPartition):
    """Counts the entries a decision reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        for item in super().iterate(start, stop):
            self.reads += 1
            yield item


def _big(count: int, **kw: object) -> Harness:
    store = MemoryStore()
    seed_records(store, NOTICE, T0, "cust-1", count, **kw)  # type: ignore[arg-type]
    return Harness(NOTICE, T0, store=store)


def _reads_for_one_recording(held: int) -> int:
    store = MemoryStore()
    store.partitions[0] = CountingPartition()
    seed_records(store, NOTICE, T0, "cust-1", held)
    h = Harness(NOTICE, T0, store=store)
    partition = store.partitions[0]
    assert isinstance(partition, CountingPartition)
    partition.reads = 0
    h.decide(h.event(CallRecorded, recording_id="new-1", system="call-recorder"))
    return partition.reads


def test_an_event_reads_the_same_entries_whatever_the_subject_holds() -> None:
    assert _reads_for_one_recording(10) == _reads_for_one_recording(5_000)


def test_erasure_of_many_records_goes_in_pages_and_names_every_record() -> None:
    h = _big(MANY)
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert d.steps == 3  # one decision per page
    assert all(len(c.record_ids) <= limits.CHUNK for c in d.commands)
    assert all(c.action is Action.DELETE for c in d.commands)
    erased = {r for c in d.commands for r in c.record_ids}
    assert len(erased) == MANY
    # The proof: the pages' audit entries name every record erased.
    decided = [a for a in d.audit if a.decision == "erasure-decided"]
    assert [a.details["page"] for a in decided] == ["1", "2", "3"]
    named = {
        r
        for a in decided
        for k, v in a.details.items()
        if k == "records-erased" or k.startswith("records-erased-")
        for r in v.split(",")
    }
    assert named == erased
    # Answered once, with the last page; completed when every chunk is confirmed.
    assert [r.status for r in d.responses] == [ResponseStatus.IN_PROGRESS]
    for command in d.commands[:-1]:
        assert h.ack(command).responses == []
    [done] = h.ack(d.commands[-1]).responses
    assert done.status is ResponseStatus.COMPLETED
    assert h.state is not None
    assert (h.state.records, h.state.commands) == ({}, {})  # every record confirmed gone


def test_erasure_of_one_page_is_one_decision_as_before() -> None:
    h = _big(10)
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert d.steps == 1
    assert len(d.commands) == 1
    [decided] = [a for a in d.audit if a.decision == "erasure-decided"]
    assert "page" not in decided.details


def test_kept_records_are_counted_and_listed_up_to_the_bound() -> None:
    h = _big(300, system="billing-db", category=DataCategory.BILLING, purpose="billing-accounting")
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    [refused] = d.responses
    assert refused.status is ResponseStatus.REFUSED
    assert len(refused.kept) == limits.MAX_KEPT_IN_RESPONSE
    assert any("200 further records are kept" in r for r in refused.reasons)
    assert refused.reasons[-1].startswith("You have the right to complain")


def test_contract_end_reschedules_every_record_a_page_at_a_time() -> None:
    h = _big(MANY, system="crm", category=DataCategory.CORRESPONDENCE, purpose="service-delivery")
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    assert h.next_due() is None  # nothing due while the contract is active
    d = h.send(h.event(ContractEnded, contract_id="ct-1"))
    # Not needed for a legal obligation: deleted at contract end, every one of them.
    assert sum(len(c.record_ids) for c in d.commands) == MANY
    assert all(len(c.record_ids) <= limits.CHUNK for c in d.commands)


def test_hold_release_pages_through_the_held_records() -> None:
    h = _big(MANY)
    h.send(h.event(LegalHoldPlaced, hold_id="hold-1", reason="litigation", case_reference="c-1"))
    h.clock.advance(timedelta(days=31))
    held = h.tick()
    assert held.commands == []
    assert len([a for a in held.audit if a.decision == "deletion-held"]) == MANY
    released = h.send(h.event(LegalHoldReleased, hold_id="hold-1"))
    assert sum(len(c.record_ids) for c in released.commands) == MANY


def test_restriction_covers_every_record_and_its_lift_reaches_them() -> None:
    h = _big(MANY, system="crm", category=DataCategory.CORRESPONDENCE, purpose="service-delivery")
    d = h.send(h.event(RestrictionRequested, request_id="r-1", reason="disputes accuracy"))
    assert {c.action for c in d.commands} == {Action.RESTRICT}
    assert sum(len(c.record_ids) for c in d.commands) == MANY
    for command in d.commands:
        h.ack(command)
    lifted = h.send(h.event(RestrictionLifted, request_id="r-1"))
    assert {c.action for c in lifted.commands} == {Action.LIFT_RESTRICTION}
    assert sum(len(c.record_ids) for c in lifted.commands) == MANY
    assert h.state is not None
    assert not h.state.restricted


def test_a_record_registered_again_after_deletion_is_deleted_again_under_a_new_id() -> None:
    h = Harness(NOTICE, T0)
    first = h.event(CallRecorded, recording_id="rec-1", system="call-recorder")
    h.send(first)
    h.clock.advance(timedelta(days=30))
    [delete] = h.tick().commands
    h.ack(delete)
    assert h.state is None
    again = h.event(CallRecorded, recording_id="rec-1", system="call-recorder")
    h.send(again)
    h.clock.advance(timedelta(days=30))
    [second] = h.tick().commands
    assert second.record_ids == delete.record_ids == ["rec-1"]
    assert second.command_id != delete.command_id
    assert second.command_id == command_id(
        action=Action.DELETE,
        system="call-recorder",
        subject_id="cust-1",
        rule_id="N7.call-recordings",
        record_ids=["rec-1"],
        generations={"rec-1": again.event_id},
    )


def test_a_record_registered_again_while_its_delete_is_out_is_held_again_after() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=30))
    [delete] = h.tick().commands
    again = h.event(CallRecorded, recording_id="rec-1", system="call-recorder")
    assert [a.decision for a in h.send(again).audit] == ["registered-while-deleting"]
    closed = h.ack(delete)
    assert [a.decision for a in closed.audit] == ["command-completed", "record-held-again"]
    assert h.state is not None
    record = h.state.records["call-recorder/rec-1"]
    assert (record.generation, record.due_at) == (
        again.event_id,
        h.clock.now() + timedelta(days=30),
    )


def test_finished_requests_and_closed_commands_leave_after_the_policy_periods() -> None:
    h = Harness(NOTICE, T0)
    register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries",
             basis=LegalBasis.LEGITIMATE_INTERESTS)  # fmt: skip
    [delete] = h.send(h.event(ErasureRequested, request_id="req-1")).commands
    h.ack(delete)
    kept = NOTICE.state.finished_requests_kept_for.as_timedelta()
    h.clock.advance(kept - timedelta(minutes=1))
    h.tick()
    assert "req-1" in h.entries_header().requests
    h.clock.advance(timedelta(minutes=2))
    h.tick()
    # Nothing is left of the subject at all: not the request, not the command, not dedup.
    assert list(h.entries.iterate(b"", b"\xff")) == []
    # A late ack is now unknown (the closed command was forgotten), and audited so.
    assert [a.decision for a in h.ack(delete).audit] == ["unknown-command-ack"]


@pytest.mark.parametrize("count", [10, 1_000])
def test_seeded_subject_behaves_like_one_built_event_by_event(count: int) -> None:
    h = _big(count)
    h.clock.advance(timedelta(days=30))
    d = h.tick()
    assert sum(len(c.record_ids) for c in d.commands) == count
