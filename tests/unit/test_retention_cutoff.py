"""A deletion that rests on no contract being known waits for the sources (N1, N9).

A record of a person with no contract is deleted ``default.keep_for`` after it was
recorded (N1.no-contract-default); one of a relationship that ended, some time after
the last contract end. Both hold only if no contract was running at the due time, and
a ``ContractStarted`` still unread on the billing topic would say otherwise. So the
deletion waits until the systems that report contracts (``event_time.contract_sources``)
have been seen past the due time, or the policy's ``event_time.max_wait`` after it.
A call recording's 30 days hold whatever the contracts, and do not wait. Shipped
policy: billing reports contracts, 15 minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.rules import cutoff
from agents.rules.context import to_ms
from agents.rules.testing import Harness
from agents.runtime.scheduler import Waker
from agents.store import keys
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.commands import Action, Command
from schemas.events import CallRecorded, ContractEnded, ContractStarted, SourceWatermark
from schemas.internal import DueTick
from tests.unit.builders import NOTICE_AS_SHIPPED, register

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
SOURCES = list(NOTICE_AS_SHIPPED.event_time.sources)
MAX_WAIT = NOTICE_AS_SHIPPED.event_time.max_wait.as_timedelta()


def _beat(h: Harness, source: str, at: datetime) -> None:
    beat = SourceWatermark(
        event_id=f"wm-{source}-{at.timestamp()}", source_system=source, watermark=at
    )
    h.store.apply(h.partition, cutoff.on_heartbeat(h.entries, beat, h.clock.now(), h.policy))


def _lead(h: Harness) -> datetime:
    """A sales lead's CRM record, no contract: returns its due time."""
    register(
        h,
        "lead-1",
        "crm",
        DataCategory.CORRESPONDENCE,
        "sales-enquiries",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        source=DataSource.SUBJECT,
        source_system="crm",
    )
    due = h.next_due()
    assert due is not None
    return due


@pytest.mark.parametrize(
    ("seen_past_due", "deleted_at_due"),
    [
        (SOURCES, True),
        (["billing"], True),  # only the system that reports contracts matters
        ([s for s in SOURCES if s != "billing"], False),
        ([], False),
    ],
)
def test_a_no_contract_deletion_waits_for_every_source(
    seen_past_due: list[str], deleted_at_due: bool
) -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    for source in seen_past_due:
        _beat(h, source, due)
    step = h.tick()
    if deleted_at_due:
        [cmd] = step.commands
        assert (cmd.action, cmd.rule_id) == (Action.DELETE, "N1.no-contract-default")
        return
    assert step.commands == []
    [deferred] = [a for a in step.audit if a.decision == "deletion-deferred"]
    assert deferred.rule_id == "N1.no-contract-default"
    assert deferred.details["lagging"] == "billing"
    assert h.next_due() == due + MAX_WAIT


def test_a_contract_reported_late_keeps_the_record() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    assert h.tick().commands == []  # billing not seen past the due time
    # The billing system reports a contract started a day before the due time.
    h.send(
        h.event(
            ContractStarted,
            contract_id="c-1",
            source_system="billing",
            event_time=due - timedelta(days=1),
        )
    )
    h.clock.set(due + MAX_WAIT + timedelta(minutes=1))
    assert h.tick().commands == []
    assert h.next_due() is None  # kept while the contract runs


def test_after_the_maximum_wait_it_is_deleted_whatever_the_sources() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    assert h.tick().commands == []
    h.clock.set(due + MAX_WAIT - timedelta(seconds=1))
    assert h.tick().commands == []  # not due again yet
    h.clock.set(due + MAX_WAIT)
    [cmd] = h.tick().commands
    assert (cmd.action, cmd.record_ids) == (Action.DELETE, ["lead-1"])
    [audit] = [a for a in h.decisions[-1].audit if a.decision == "retention-delete"]
    assert audit.details["due-at"] == due.isoformat()  # the rule's own due time


def test_a_call_recording_does_not_wait() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    h.send(
        h.event(
            CallRecorded,
            recording_id="rec-1",
            system="call-recorder",
            source_system="telephony",
        )
    )
    h.clock.set(T0 + timedelta(days=30))
    [cmd] = h.tick().commands  # no source seen past the due time, deleted all the same
    assert cmd.rule_id == "N7.call-recordings"


def test_a_record_kept_for_a_legal_obligation_waits_under_its_own_rule() -> None:
    # Its contract is remembered for the wait too: forgotten at the end of the
    # legal-obligation period, the record would fall to the no-contract rule.
    h = Harness(NOTICE_AS_SHIPPED, T0)
    h.send(h.event(ContractStarted, contract_id="c-1", source_system="billing"))
    register(
        h,
        "bill-1",
        "billing-db",
        DataCategory.BILLING,
        "billing-accounting",
        basis=LegalBasis.LEGAL_OBLIGATION,
        source_system="billing",
        contract_id="c-1",
    )
    h.clock.advance(timedelta(days=1))
    h.send(h.event(ContractEnded, contract_id="c-1", source_system="billing"))
    due = h.next_due()
    assert due is not None
    h.clock.set(due)
    assert h.tick().commands == []  # billing not seen past the due time
    h.clock.set(due + MAX_WAIT)
    [cmd] = h.tick().commands
    assert (cmd.rule_id, cmd.record_ids) == ("N6.legal-obligation", ["bill-1"])


# -- waking a deferred deletion on the watermark ---------------------------------------


def _deferrals(h: Harness) -> list[bytes]:
    start = keys.DEFERRED + keys.SEP
    return [k for k, _ in h.entries.iterate(start, keys.end_of(start))]


def _wake(h: Harness) -> list[Command]:
    """What the worker's timer does: tick each subject whose deferral the contract
    sources have passed, naming the records, as one decision each."""
    now = h.clock.now()
    found = Waker().deferred(h.entries, h.policy.event_time.contract_sources, to_ms(now))
    commands: list[Command] = []
    for subject_id, due_ms, records in found:
        due_at = datetime.fromtimestamp(due_ms / 1000, UTC)
        tick = DueTick(subject_id=subject_id, due_at=due_at, sent_at=now, records=records)
        commands += h.send(tick).commands
    return commands


def test_a_deferred_deletion_goes_as_soon_as_billing_passes_its_due_time() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    assert h.tick().commands == []  # deferred: billing not seen past the due time
    assert len(_deferrals(h)) == 1
    h.clock.set(due + timedelta(minutes=2))
    assert _wake(h) == [], "billing still behind: nothing to wake"
    _beat(h, "billing", due)
    [cmd] = _wake(h)
    assert (cmd.action, cmd.record_ids) == (Action.DELETE, ["lead-1"])
    assert h.clock.now() < due + MAX_WAIT
    assert _deferrals(h) == []
    assert _wake(h) == []


def test_a_deferred_record_kept_by_a_late_contract_is_not_woken_into_a_deletion() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    assert h.tick().commands == []
    h.send(
        h.event(
            ContractStarted,
            contract_id="c-1",
            source_system="billing",
            event_time=due - timedelta(days=1),
        )
    )
    _beat(h, "billing", due)
    assert _wake(h) == []
    assert _deferrals(h) == []
    assert h.next_due() is None


def test_a_deletion_at_the_maximum_wait_leaves_no_deferral_behind() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    h.tick()
    h.clock.set(due + MAX_WAIT)
    [cmd] = h.tick().commands
    assert cmd.action is Action.DELETE
    assert _deferrals(h) == []


def test_a_record_never_deferred_writes_no_deferral_entry() -> None:
    h = Harness(NOTICE_AS_SHIPPED, T0)
    due = _lead(h)
    h.clock.set(due + timedelta(seconds=1))
    _beat(h, "billing", due)
    step = h.tick()
    assert [c.action for c in step.commands] == [Action.DELETE]
    assert not [k for k, _ in step.writes if k[:1] == keys.DEFERRED]
