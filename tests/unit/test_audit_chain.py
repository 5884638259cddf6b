"""The audit hash chain: any change, removal or reordering is caught and located."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from fastavro import schemaless_writer

from agents.audit.chain import ChainHead, check_chain, link, pseudonym, verify_chain
from agents.rules.context import AuditEntry
from schemas.audit import AuditEvent, AuditSource
from schemas.registry import SchemaCatalog
from streams.codec import SINGLE_OBJECT_MARKER, Codec

KEY = b"test-key"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(n: int, subject: str = "cust-1") -> AuditEntry:
    return AuditEntry(
        subject_id=subject,
        controller_id="smartcomms",
        rule_id="N7.call-recordings",
        policy_version="p1",
        decision="retention-delete",
        event_ids_in=[f"ev-{n}"],
        command_ids_out=[f"cmd-{n}"],
        event_time=T0,
        details={"record-ids": f"rec-{n}"},
    )


def chain(n: int) -> list[tuple[int, AuditEvent]]:
    head = ChainHead.genesis()
    out = []
    for i in range(n):
        event = link(head, entry(i), partition=0, key=KEY, decided_at=T0)
        head = ChainHead.of(event)
        out.append((i, event))
    return out


def test_intact_chain_verifies() -> None:
    assert verify_chain(chain(5), KEY, ChainHead.genesis()) is None


def test_subject_appears_only_as_keyed_pseudonym() -> None:
    events = chain(1)
    event = events[0][1]
    assert "cust-1" not in event.model_dump_json()
    assert event.subject_ref == pseudonym(KEY, "cust-1")
    assert pseudonym(b"other-key", "cust-1") != event.subject_ref


def test_changed_content_is_caught_at_its_offset() -> None:
    events = chain(5)
    offset, victim = events[2]
    events[2] = (offset, victim.model_copy(update={"rule_id": "N6.forged"}))
    broken = verify_chain(events, KEY, ChainHead.genesis())
    assert broken is not None
    assert broken.offset == 2
    assert "hash" in broken.reason


def test_rehashed_forgery_breaks_the_link_to_its_predecessor() -> None:
    events = chain(4)
    offset = events[3][0]
    forged = link(
        ChainHead(sequence=2, hash="f" * 64), entry(99), partition=0, key=KEY, decided_at=T0
    )
    events[3] = (offset, forged)
    broken = verify_chain(events, KEY, ChainHead.genesis())
    assert broken is not None
    assert broken.offset == 3
    assert "prev_hash" in broken.reason


@pytest.mark.parametrize("removed", [0, 2, 4])
def test_removed_event_is_caught(removed: int) -> None:
    events = chain(6)
    del events[removed]
    assert verify_chain(events, KEY, ChainHead.genesis()) is not None


def test_reordered_events_are_caught() -> None:
    events = chain(4)
    events[1], events[2] = events[2], events[1]
    assert verify_chain(events, KEY, ChainHead.genesis()) is not None


def test_a_range_can_be_verified_from_its_first_event() -> None:
    events = chain(6)[3:]
    assert verify_chain(events, KEY, None) is None


def test_record_chained_without_the_key_does_not_verify() -> None:
    events = chain(3)
    last = events[-1][1]
    # Correct prev_hash and sequence, but made by someone without the secret.
    forged = link(ChainHead.of(last), entry(7), partition=0, key=b"guessed", decided_at=T0)
    events.append((3, forged))
    broken = verify_chain(events, KEY, ChainHead.genesis())
    assert broken is not None
    assert broken.offset == 3


def test_verifying_with_the_wrong_key_fails_at_the_first_event() -> None:
    broken = verify_chain(chain(2), b"wrong", ChainHead.genesis())
    assert broken is not None
    assert broken.offset == 0


# -- replays and duplicates ----------------------------------------------------

TOPIC = "t.in.telephony"


def appended(
    events: list[tuple[int, AuditEvent]], offset: int, facts: AuditEntry, index: int = 0
) -> list[tuple[int, AuditEvent]]:
    """``events`` plus entry ``index`` of the decision on input ``offset``, chained as the
    writer does."""
    head = ChainHead.of(events[-1][1]) if events else ChainHead.genesis()
    event = link(
        head,
        facts,
        partition=0,
        key=KEY,
        decided_at=T0,
        source=AuditSource(TOPIC, 0, offset),
        entry_index=index,
    )
    return [*events, (len(events), event)]


def decided(*offsets: int) -> list[tuple[int, AuditEvent]]:
    events: list[tuple[int, AuditEvent]] = []
    for offset in offsets:
        events = appended(events, offset, entry(offset))
    return events


def test_a_crash_replay_is_counted_not_failed() -> None:
    # Inputs 0-4 decided; a crash before the offset commit replays 3 and 4.
    events = decided(0, 1, 2, 3, 4, 3, 4, 5)
    report = check_chain(events, KEY, ChainHead.genesis())
    assert report.broken is None
    assert (report.replayed, report.redecided, report.duplicates) == (2, 0, 0)
    assert report.first_replay_offset == 5
    assert report.checked == 8


def test_a_replay_of_the_last_input_decided_is_recognised() -> None:
    report = check_chain(decided(0, 1, 1), KEY, ChainHead.genesis())
    assert (report.broken, report.replayed, report.first_replay_offset) == (None, 1, 2)


def test_a_replay_decided_differently_is_counted_apart() -> None:
    events = decided(0, 1)
    # The state had been stored before the crash: the replayed input decides otherwise.
    events = appended(events, 1, entry(1).model_copy(update={"decision": "duplicate-event"}))
    report = check_chain(events, KEY, ChainHead.genesis())
    assert report.broken is None
    assert (report.replayed, report.redecided) == (0, 1)


def test_several_entries_of_one_input_are_not_a_replay() -> None:
    events = decided(0)
    events = appended(
        events, 0, entry(0).model_copy(update={"decision": "retention-delete"}), index=1
    )
    report = check_chain(events, KEY, ChainHead.genesis())
    assert (report.broken, report.replayed, report.redecided) == (None, 0, 0)


def test_byte_identical_redeliveries_are_skipped_as_duplicates() -> None:
    # A non-idempotent producer retry: records 1-2 written twice, at consecutive offsets.
    events = decided(0, 1, 2, 3)
    copies = [events[1][1], events[2][1]]
    with_copies = [*events[:3], *((3 + i, e) for i, e in enumerate(copies))]
    with_copies += [(5, events[3][1])]
    report = check_chain(with_copies, KEY, ChainHead.genesis())
    assert report.broken is None
    assert report.duplicates == 2
    assert report.replayed == 0


def test_tampering_after_a_replay_is_still_named() -> None:
    events = decided(0, 1, 0, 1)
    offset, victim = events[3]
    events[3] = (offset, victim.model_copy(update={"decision": "nothing-happened"}))
    report = check_chain(events, KEY, ChainHead.genesis())
    assert report.broken is not None
    assert report.broken.offset == 3
    assert report.replayed == 1


def test_the_source_is_covered_by_the_hash() -> None:
    events = decided(0, 1)
    offset, victim = events[1]
    # Claiming another input (to pass a new decision off as a replay) breaks the hash.
    events[1] = (offset, victim.model_copy(update={"source_offset": 0}))
    broken = verify_chain(events, KEY, ChainHead.genesis())
    assert broken is not None
    assert broken.offset == 1
    assert "hash" in broken.reason


def test_events_written_before_sources_were_recorded_still_verify() -> None:
    """An AuditEvent v1 record (no source fields) decodes and verifies under v2."""
    entry_v1 = SchemaCatalog().entry(AuditEvent).history[0]
    assert entry_v1.version == 1
    old_chain = chain(3)
    encoded = []
    for _, event in old_chain:
        record = event.model_dump()
        for name in ("source_topic", "source_partition", "source_offset", "source_entry"):
            del record[name]
        body = io.BytesIO()
        schemaless_writer(body, entry_v1.parsed, record)
        encoded.append(SINGLE_OBJECT_MARKER + entry_v1.fingerprint + body.getvalue())
    codec = Codec()
    decoded = [
        (i, codec.decode(data, None, now=T0, expected=(AuditEvent,), check_key=False))
        for i, data in enumerate(encoded)
    ]
    assert all(isinstance(e, AuditEvent) and e.source is None for _, e in decoded)
    # New events (with sources) continue the old chain.
    events: list[tuple[int, AuditEvent]] = [(i, e) for i, e in decoded if isinstance(e, AuditEvent)]
    events = appended(events, 7, entry(7))
    assert verify_chain(events, KEY, ChainHead.genesis()) is None
