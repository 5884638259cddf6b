"""The audit hash chain: any change, removal or reordering is caught and located."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.audit_chain import ChainHead, link, pseudonym, verify_chain
from agents.rules.context import AuditEntry
from schemas.audit import AuditEvent

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
