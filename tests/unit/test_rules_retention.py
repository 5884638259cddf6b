"""N7 call recordings, legal holds, N6 contract retention, N2 controller overrides."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.rules.decide import decide
from agents.rules.state import RecordStatus
from agents.rules.testing import Harness
from schemas.base import DataCategory, LegalBasis
from schemas.commands import AckOutcome, Action
from schemas.events import (
    CallRecorded,
    ContractEnded,
    ContractStarted,
    LegalHoldPlaced,
    LegalHoldReleased,
)
from schemas.internal import DueTick
from tests.unit.builders import DEMO, NOTICE, register

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def _recording(h: Harness, rec: str = "rec-1", **kw: Any) -> None:
    h.send(
        h.event(
            CallRecorded, recording_id=rec, system="call-recorder", source_system="telephony", **kw
        )
    )


@pytest.mark.parametrize(
    ("offset", "deletes"),
    [
        (timedelta(days=29), False),
        (timedelta(days=30) - MS, False),
        (timedelta(days=30), True),
        (timedelta(days=45), True),
    ],
)
def test_n7_recording_deleted_30_days_after_recorded(offset: timedelta, deletes: bool) -> None:
    h = Harness(NOTICE, T0)
    _recording(h)
    assert h.next_due() == T0 + timedelta(days=30)
    h.clock.set(T0 + offset)
    d = h.tick()
    if not deletes:
        assert (d.commands, d.audit) == ([], [])
        return
    [cmd] = d.commands
    assert (cmd.action, cmd.target_system, cmd.record_ids) == (
        Action.DELETE,
        "call-recorder",
        ["rec-1"],
    )
    assert cmd.rule_id == "N7.call-recordings"
    assert cmd.policy_version == NOTICE.version
    assert cmd.deadline == h.clock.now() + timedelta(hours=1)
    [audit] = d.audit
    assert (audit.decision, audit.rule_id, audit.command_ids_out) == (
        "retention-delete",
        "N7.call-recordings",
        [cmd.command_id],
    )
    assert h.state is not None
    assert h.state.records["call-recorder/rec-1"].status is RecordStatus.DELETING


def test_n7_due_from_event_time_not_arrival() -> None:
    h = Harness(NOTICE, T0 + timedelta(days=2))
    _recording(h, event_time=T0)  # published two days late
    assert h.next_due() == T0 + timedelta(days=30)


@pytest.mark.parametrize("outcome", [AckOutcome.DONE, AckOutcome.NOT_HELD])
def test_ack_closes_deletion_and_forgets_record(outcome: AckOutcome) -> None:
    h = Harness(NOTICE, T0)
    _recording(h)
    h.clock.advance(timedelta(days=30))
    [cmd] = h.tick().commands
    d = h.ack(cmd, outcome)
    assert d.state is None  # nothing left about this subject
    [audit] = d.audit
    assert (audit.decision, audit.details["outcome"], audit.details["record-ids"]) == (
        "command-completed",
        outcome.value,
        "rec-1",
    )


def test_tick_repeated_does_not_reissue_outstanding_delete() -> None:
    h = Harness(NOTICE, T0)
    _recording(h)
    h.clock.advance(timedelta(days=30))
    assert len(h.tick().commands) == 1
    h.clock.advance(MS)
    assert h.tick().commands == []


def test_a_replayed_deletion_names_its_records_under_the_same_command_id() -> None:
    # A worker sends the DELETE for rec-1 and is killed before storing the decision;
    # the replay comes later, when rec-2 is due too. rec-1 must be deleted under the
    # id already sent, never under a second one (chaos run, 2026-12-02).
    h = Harness(NOTICE, T0)
    _recording(h, "rec-1")
    h.clock.advance(timedelta(seconds=2))
    _recording(h, "rec-2")
    h.clock.set(T0 + timedelta(days=30))
    now = h.clock.now()
    lost = decide(h.entries, DueTick(subject_id=h.subject_id, due_at=now, sent_at=now), now, NOTICE)
    [sent] = lost.commands
    assert sent.record_ids == ["rec-1"]

    h.clock.advance(timedelta(seconds=20))
    replayed = {tuple(c.record_ids): c.command_id for c in h.tick().commands}
    assert replayed == {("rec-1",): sent.command_id, ("rec-2",): replayed[("rec-2",)]}
    assert replayed[("rec-2",)] != sent.command_id


@pytest.mark.parametrize(
    ("scope", "holds"),
    [
        ({"categories": [DataCategory.CALL_RECORDING]}, True),
        ({"record_ids": ["rec-1"]}, True),
        ({}, True),  # empty scope: everything of the subject
        ({"categories": [DataCategory.BILLING]}, False),
        ({"record_ids": ["rec-2"]}, False),
    ],
)
def test_legal_hold_then_release(scope: dict[str, Any], holds: bool) -> None:
    h = Harness(NOTICE, T0)
    _recording(h)
    h.clock.advance(timedelta(days=10))
    h.send(
        h.event(
            LegalHoldPlaced,
            hold_id="hold-1",
            reason="Dispute over order 77",
            case_reference="CASE-9",
            **scope,
        )
    )
    h.clock.set(T0 + timedelta(days=30))
    d = h.tick()
    if not holds:
        assert [c.record_ids for c in d.commands] == [["rec-1"]]
        return
    assert d.commands == []
    [audit] = d.audit
    assert (audit.decision, audit.rule_id) == ("deletion-held", "N7.call-recordings")
    assert (audit.details["hold-ids"], audit.details["case-references"]) == ("hold-1", "CASE-9")
    assert h.next_due() is None  # nothing to wake for while held
    h.clock.advance(timedelta(days=5))
    assert (h.tick().commands, h.decisions[-1].audit) == ([], [])  # audited once only
    h.clock.advance(timedelta(days=5))
    d = h.send(h.event(LegalHoldReleased, hold_id="hold-1"))
    [cmd] = d.commands  # overdue: deleted at once on release
    assert (cmd.record_ids, cmd.rule_id) == (["rec-1"], "N7.call-recordings")
    assert [a.decision for a in d.audit] == ["hold-released", "retention-delete"]


def test_release_of_one_of_two_holds_keeps_holding() -> None:
    h = Harness(NOTICE, T0)
    _recording(h)
    for hold in ("hold-1", "hold-2"):
        h.send(h.event(LegalHoldPlaced, hold_id=hold, reason="r", case_reference=hold.upper()))
    h.clock.advance(timedelta(days=31))
    assert h.tick().commands == []
    assert h.send(h.event(LegalHoldReleased, hold_id="hold-1")).commands == []
    assert len(h.send(h.event(LegalHoldReleased, hold_id="hold-2")).commands) == 1


def test_release_of_unknown_hold_is_audited() -> None:
    h = Harness(NOTICE, T0)
    _recording(h)
    d = h.send(h.event(LegalHoldReleased, hold_id="nope"))
    assert [a.decision for a in d.audit] == ["unknown-hold-released"]


def _customer(h: Harness) -> None:
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    register(
        h,
        "inv-1",
        "billing-db",
        DataCategory.BILLING,
        "billing-accounting",
        basis=LegalBasis.LEGAL_OBLIGATION,
        contract_id="ct-1",
    )
    register(
        h, "mail-1", "crm", DataCategory.CORRESPONDENCE, "service-delivery", contract_id="ct-1"
    )
    register(
        h,
        "prof-1",
        "marketing-platform",
        DataCategory.MARKETING_PROFILE,
        "sales-marketing",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
    )


def test_n6_nothing_due_during_contract() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    assert h.state is not None
    assert {r.record_id: r.due_at for r in h.state.records.values()} == {
        "inv-1": None,
        "mail-1": None,
        "prof-1": None,
    }
    assert h.next_due() is None


def test_n6_contract_end_deletes_non_legal_and_keeps_legal_7_years() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    end = T0 + timedelta(days=400)
    h.clock.set(end)
    d = h.send(h.event(ContractEnded, contract_id="ct-1"))
    deletes = {(c.target_system, tuple(c.record_ids), c.rule_id) for c in d.commands}
    assert deletes == {
        ("crm", ("mail-1",), "N6.contract-end"),
        ("marketing-platform", ("prof-1",), "N6.contract-end"),
    }
    assert all(c.action is Action.DELETE for c in d.commands)
    assert h.state is not None
    invoice = h.state.records["billing-db/inv-1"]
    assert (invoice.rule_id, invoice.due_at) == (
        "N6.legal-obligation",
        datetime(2032, 2, 4, 9, 0, tzinfo=UTC),
    )
    assert "contract-ended" in [a.decision for a in d.audit]


@pytest.mark.parametrize(
    ("ended_at", "due"),
    [
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), datetime(2031, 2, 28, 12, 0, tzinfo=UTC)),
        (datetime(2024, 2, 28, 12, 0, tzinfo=UTC), datetime(2031, 2, 28, 12, 0, tzinfo=UTC)),
        (datetime(2024, 3, 1, 0, 0, tzinfo=UTC), datetime(2031, 3, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_n6_seven_calendar_years_boundary(ended_at: datetime, due: datetime) -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    h.clock.set(ended_at)
    h.send(h.event(ContractEnded, contract_id="ct-1"))
    for cmd in h.decisions[-1].commands:
        h.ack(cmd)
    assert h.next_due() == due
    h.clock.set(due - MS)
    assert (h.tick().commands, h.decisions[-1].audit) == ([], [])
    h.clock.set(due)
    [cmd] = h.tick().commands
    assert (cmd.target_system, cmd.record_ids, cmd.rule_id) == (
        "billing-db",
        ["inv-1"],
        "N6.legal-obligation",
    )
    assert h.ack(cmd).state is None  # the contract's dates go with the last record


def test_n6_renewal_clears_due_and_next_end_recomputes() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    first_end = T0 + timedelta(days=365)
    h.clock.set(first_end)
    for cmd in h.send(h.event(ContractEnded, contract_id="ct-1")).commands:
        h.ack(cmd)
    assert h.state is not None
    assert h.state.records["billing-db/inv-1"].due_at is not None
    h.clock.set(first_end + timedelta(days=700))
    h.send(h.event(ContractStarted, contract_id="ct-2"))
    assert h.state.records["billing-db/inv-1"].due_at is None  # type: ignore[union-attr]
    # Seven years after the first end, nothing happens: a contract is active.
    h.clock.set(first_end + timedelta(days=7 * 366))
    assert h.tick().commands == []
    second_end = h.clock.now()
    h.send(h.event(ContractEnded, contract_id="ct-2"))
    assert h.state.records["billing-db/inv-1"].due_at == second_end.replace(  # type: ignore[union-attr]
        year=second_end.year + 7
    )


def test_contract_ended_before_started_stays_ended() -> None:
    h = Harness(NOTICE, T0)
    register(
        h,
        "inv-1",
        "billing-db",
        DataCategory.BILLING,
        "billing-accounting",
        basis=LegalBasis.LEGAL_OBLIGATION,
        contract_id="ct-1",
    )
    end = T0 + timedelta(days=1)
    h.clock.set(end)
    h.send(h.event(ContractEnded, contract_id="ct-1"))
    h.clock.advance(timedelta(hours=1))
    d = h.send(h.event(ContractStarted, contract_id="ct-1", event_time=T0))  # arrives late
    assert [a.decision for a in d.audit] == ["contract-started-after-end"]
    assert h.state is not None
    contract = h.state.contracts["ct-1"]
    assert (contract.started_at, contract.ended_at, contract.active) == (T0, end, False)
    assert h.state.records["billing-db/inv-1"].due_at == end.replace(year=end.year + 7)


def test_record_before_its_contract_uses_default_then_contract() -> None:
    h = Harness(NOTICE, T0)
    register(
        h, "mail-1", "crm", DataCategory.CORRESPONDENCE, "service-delivery", contract_id="ct-1"
    )
    assert h.state is not None
    rec = h.state.records["crm/mail-1"]
    assert (rec.rule_id, rec.due_at) == ("N1.no-contract-default", T0.replace(year=2026))
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    rec = h.state.records["crm/mail-1"]  # type: ignore[union-attr]
    assert (rec.rule_id, rec.due_at) == ("N6.contract-end", None)


def test_duplicate_contract_events_are_harmless() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    h.clock.advance(timedelta(days=10))
    first = h.send(h.event(ContractEnded, contract_id="ct-1"))
    again = h.send(h.event(ContractEnded, contract_id="ct-1"))  # other publisher, other id
    assert len(first.commands) == 2
    assert (again.commands, again.audit) == ([], [])


@pytest.mark.parametrize(
    ("controller", "due_after"),
    [
        ("smartcomms", timedelta(seconds=20)),
        ("demo-client", timedelta(seconds=60)),  # the client's override (N2)
        ("unknown-client", timedelta(seconds=20)),
    ],
)
def test_n2_controller_override(controller: str, due_after: timedelta) -> None:
    h = Harness(DEMO, T0)
    _recording(h, controller_id=controller)
    assert h.next_due() == T0 + due_after
    h.clock.set(T0 + due_after)
    [cmd] = h.tick().commands
    assert cmd.controller_id == controller


def test_default_retention_for_people_without_contract() -> None:
    h = Harness(NOTICE, T0)
    register(
        h,
        "lead-1",
        "crm",
        DataCategory.FORMS_SURVEYS,
        "sales-enquiries",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
    )
    assert h.next_due() == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def test_unknown_system_is_refused_visibly() -> None:
    h = Harness(NOTICE, T0)
    d = register(h, "x-1", "shadow-it", DataCategory.CORRESPONDENCE)
    assert [a.decision for a in d.audit] == ["unknown-system"]
    assert d.state is None


def test_n2_contracts_only_govern_their_own_controllers_records() -> None:
    h = Harness(DEMO, T0)
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    register(h, "mail-1", "crm", DataCategory.CORRESPONDENCE, "service-delivery")
    register(
        h,
        "cli-1",
        "crm",
        DataCategory.CORRESPONDENCE,
        "client-processing",
        controller_id="demo-client",
    )
    assert h.state is not None
    assert h.state.records["crm/mail-1"].due_at is None  # SmartComms contract active
    client = h.state.records["crm/cli-1"]
    assert (client.rule_id, client.due_at) == (
        "N1.no-contract-default",
        T0 + timedelta(seconds=120),
    )
    h.clock.advance(timedelta(seconds=5))
    d = h.send(h.event(ContractEnded, contract_id="ct-1"))
    assert [c.record_ids for c in d.commands] == [["mail-1"]]
