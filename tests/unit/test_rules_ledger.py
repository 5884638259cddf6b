"""The erasure ledger and erasures re-applied after a restore (N9.erasure-replay)."""

from datetime import UTC, datetime, timedelta

from agents.rules import limits
from agents.rules.ledger import REPLAY_OF
from agents.rules.testing import Harness, Step, seed_records
from agents.store.base import MAX_MESSAGE_BYTES
from agents.store.memory import MemoryStore
from schemas.base import DataCategory
from schemas.commands import AckOutcome, Action
from schemas.events import CallRecorded, ErasureRequested
from schemas.internal import ErasureLedgerEntry, ErasureReplay
from streams.codec import Codec
from tests.unit.builders import NOTICE, register

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def _ledger(step: Step) -> list[ErasureLedgerEntry]:
    return [e for d in step.decisions for e in d.ledger]


def _replay(entry: ErasureLedgerEntry, taken_at: datetime) -> ErasureReplay:
    return ErasureReplay(
        subject_id=entry.subject_id,
        restore_id="restore-1",
        backup_taken_at=taken_at,
        command_id=entry.command_id,
        system=entry.system,
        controller_id=entry.controller_id,
        record_ids=entry.record_ids,
        categories=entry.categories,
        rule_id=entry.rule_id,
        request_id=entry.request_id,
        erased_at=entry.erased_at,
    )


def _erased() -> tuple[Harness, list[ErasureLedgerEntry]]:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=1))
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert _ledger(d) == []  # nothing is erased until the system says so
    h.clock.advance(timedelta(minutes=5))
    entries = [e for c in d.commands for e in _ledger(h.ack(c))]
    return h, entries


def test_a_confirmed_deletion_is_written_to_the_ledger_without_personal_data() -> None:
    _, entries = _erased()
    assert {(e.system, tuple(e.record_ids)) for e in entries} == {
        ("crm", ("lead-1",)),
        ("call-recorder", ("rec-1",)),
    }
    for entry in entries:
        assert entry.subject_id == "cust-1"
        assert entry.rule_id == "N9.erasure"
        assert entry.request_id == "req-1"
        assert entry.erased_at == T0 + timedelta(days=1, minutes=5)
    # Only identifiers, rule, request and time: no field for data values.
    assert set(ErasureLedgerEntry.model_fields) == {
        "command_id",
        "system",
        "subject_id",
        "controller_id",
        "record_ids",
        "categories",
        "rule_id",
        "request_id",
        "erased_at",
    }


def test_a_retention_deletion_is_in_the_ledger_too() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=30, seconds=1))
    [delete] = h.tick().commands
    [entry] = _ledger(h.ack(delete, AckOutcome.NOT_HELD))
    assert entry.rule_id == "N7.call-recordings"
    assert entry.command_id == delete.command_id


def test_a_failed_deletion_is_not_in_the_ledger() -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=30, seconds=1))
    [delete] = h.tick().commands
    assert d.commands == []
    assert _ledger(h.ack(delete, AckOutcome.FAILED)) == []


def test_replay_resends_the_delete_with_its_id_audits_it_and_tracks_it() -> None:
    h, entries = _erased()
    crm = next(e for e in entries if e.system == "crm")
    h.clock.advance(timedelta(days=3))
    taken_at = T0  # the backup was taken before the erasure
    d = h.send(_replay(crm, taken_at))
    [command] = d.commands
    assert command.command_id == crm.command_id
    assert command.action is Action.DELETE
    assert command.target_system == "crm"
    assert command.record_ids == ["lead-1"]
    assert command.request_id == "req-1"
    assert command.parameters == {REPLAY_OF: "restore-1"}
    [audit] = [a for a in d.audit if a.decision == "erasure-replayed"]
    assert audit.rule_id == "N9.erasure-replay"
    assert audit.command_ids_out == [crm.command_id]
    assert audit.details["restore-id"] == "restore-1"
    assert audit.details["system"] == "crm"
    # Tracked like any command: re-sent when not acknowledged in time...
    h.clock.advance(NOTICE.commands.ack_deadline.as_timedelta() + timedelta(seconds=1))
    [again] = h.tick().commands
    assert again.command_id == crm.command_id
    assert again.attempt == 2
    # ...closed by its ack, which writes the ledger entry again with the new time.
    done = h.ack(again)
    [entry] = _ledger(done)
    assert entry.command_id == crm.command_id
    assert entry.erased_at == h.clock.now()
    assert "command-completed" in [a.decision for a in done.audit]
    assert done.state is None or done.state.commands == {}


def test_a_replay_while_the_resend_is_in_flight_sends_nothing_twice() -> None:
    h, entries = _erased()
    crm = next(e for e in entries if e.system == "crm")
    assert len(h.send(_replay(crm, T0)).commands) == 1
    second = h.send(_replay(crm, T0))
    assert second.commands == []
    assert [a.decision for a in second.audit if a.rule_id == "N9.erasure-replay"] == [
        "erasure-replay-in-flight"
    ]


def test_replay_after_the_subject_state_was_forgotten_still_resends() -> None:
    h, entries = _erased()
    crm = next(e for e in entries if e.system == "crm")
    h.clock.advance(timedelta(days=400))  # closed commands and the request are forgotten
    h.tick()
    [command] = h.send(_replay(crm, T0)).commands
    assert command.command_id == crm.command_id


def test_a_large_erasure_is_a_ledger_entry_per_command_each_bounded() -> None:
    store = MemoryStore()
    seed_records(store, NOTICE, T0, "cust-1", 1_200)
    h = Harness(NOTICE, T0, store=store)
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    entries = [e for c in d.commands for e in _ledger(h.ack(c))]
    assert len(entries) == len(d.commands) == 3
    named = [r for e in entries for r in e.record_ids]
    assert len(named) == len(set(named)) == 1_200
    assert all(len(e.record_ids) <= limits.CHUNK for e in entries)


def test_a_ledger_entry_at_its_bounds_fits_in_a_message() -> None:
    longest = "r" * 128  # Identifier allows 128 characters
    entry = ErasureLedgerEntry(
        command_id="cmd-" + "f" * 32,
        system="intl-numbers-processor",
        subject_id="s" * 128,
        controller_id="smartcomms",
        record_ids=[f"{longest[:-6]}{n:06d}" for n in range(limits.CHUNK)],
        categories=list(DataCategory),
        rule_id="N9.erasure",
        request_id="q" * 128,
        erased_at=T0,
    )
    assert len(Codec().encode(entry)) < MAX_MESSAGE_BYTES
