"""The chaos suite's consistency checks, on hand-made topic contents (no broker).

Each check must flag the violation it exists for and pass the allowed case
next to it (a redelivered command, a deletion exactly at its due time...).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.audit import AuditEvent
from schemas.base import DataCategory, DataSource, DocumentType, LegalBasis, RequestType
from schemas.commands import AckOutcome, Action, Command, CommandAck
from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import (
    AccessRequested,
    CallRecorded,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    Event,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    LegalHoldReleased,
    MarketingOptOutReceived,
    RecordRegistered,
)
from schemas.responses import RequestResponse, ResponseStatus
from tests.chaos import checks
from tests.chaos.faults import FaultRecord, burst
from tests.chaos.probes import partition_of
from tests.chaos.report import BEGIN, END, RunReport, update_doc
from tests.chaos.snapshot import At, Snapshot
from tests.chaos.traffic import STORY_S, plan
from tests.unit.builders import DEMO

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HASH = "0" * 64
SUBJECT = "cust-1"


def at(model: Any, topic: str = "x.in.t", partition: int = 0, offset: int = 0) -> At[Any]:
    return At(topic, partition, offset, model)


def ev(kind: type[Event], seconds: float, event_id: str, **fields: Any) -> Event:
    source = {
        CallRecorded: "telephony",
        ContractStarted: "billing",
        ContractEnded: "billing",
        RecordRegistered: "crm",
        MarketingOptOutReceived: "marketing",
    }.get(kind, "privacy-desk")
    return kind(
        event_id=event_id,
        subject_id=fields.pop("subject_id", SUBJECT),
        source_system=source,
        event_time=T0 + timedelta(seconds=seconds),
        **fields,
    )


def recording(seconds: float = 0, rec: str = "rec-1", **kw: Any) -> Event:
    return ev(CallRecorded, seconds, f"ev-{rec}", recording_id=rec, system="call-recorder", **kw)


def registered(
    record: str, system: str, category: DataCategory, basis: LegalBasis, **kw: Any
) -> Event:
    return ev(
        RecordRegistered,
        kw.pop("seconds", 0),
        f"ev-{record}",
        record_id=record,
        system=system,
        category=category,
        source=DataSource.SUBJECT,
        legal_basis=basis,
        purpose="service-delivery"
        if basis is not LegalBasis.LEGAL_OBLIGATION
        else "billing-accounting",
        **kw,
    )


def command(
    cid: str,
    action: Action,
    system: str,
    seconds: float,
    record_ids: list[str] | None = None,
    *,
    request_id: str | None = None,
    rule_id: str = "N7.call-recordings",
    attempt: int = 1,
) -> Command:
    issued = T0 + timedelta(seconds=seconds)
    return Command(
        command_id=cid,
        action=action,
        target_system=system,
        subject_id=SUBJECT,
        controller_id="smartcomms",
        record_ids=record_ids or [],
        rule_id=rule_id,
        request_id=request_id,
        issued_at=issued,
        deadline=issued + timedelta(seconds=10),
        attempt=attempt,
        policy_version="demo",
    )


def ack(cid: str, system: str, outcome: AckOutcome = AckOutcome.DONE) -> CommandAck:
    return CommandAck(
        command_id=cid,
        subject_id=SUBJECT,
        system=system,
        outcome=outcome,
        acked_at=T0 + timedelta(minutes=5),
    )


def audit(
    event_ids: list[str], decision: str = "retention-scheduled", sequence: int = 0
) -> AuditEvent:
    return AuditEvent(
        audit_id=f"audit-{sequence}",
        partition=0,
        sequence=sequence,
        prev_hash=HASH,
        hash=HASH,
        subject_ref=HASH,
        controller_id="smartcomms",
        rule_id="r",
        policy_version="demo",
        decision=decision,
        event_ids_in=event_ids,
        event_time=T0,
        decided_at=T0,
    )


def response(request_id: str, status: ResponseStatus) -> RequestResponse:
    return RequestResponse(
        response_id=f"resp-{request_id}-{status.value}",
        request_id=request_id,
        request_type=RequestType.ERASURE,
        subject_id=SUBJECT,
        controller_id="smartcomms",
        status=status,
        received_at=T0,
        issued_at=T0,
    )


def snap(
    events: list[Event] | None = None,
    commands: list[Command] | None = None,
    acks: list[CommandAck] | None = None,
    **kw: Any,
) -> Snapshot:
    return Snapshot(
        events=[at(e, offset=i) for i, e in enumerate(events or [])],
        commands=[at(c) for c in commands or []],
        acks=[at(a) for a in acks or []],
        **kw,
    )


# -- events decided ----------------------------------------------------------------------------


def test_an_event_no_audit_entry_names_is_reported_as_never_decided() -> None:
    decided, lost = recording(rec="rec-1"), recording(rec="rec-2")
    check = checks.events_decided(snap([decided, lost], audit=[at(audit(["ev-rec-1"]))]))
    assert check.checked == 2
    assert len(check.violations) == 1
    assert "ev-rec-2" in check.violations[0]


def test_a_dead_lettered_event_counts_as_decided() -> None:
    event = recording()
    dead = DeadLetter(
        topic="x.in.t",
        partition=0,
        offset=0,
        reason_class=ReasonClass.INVALID_MODEL,
        reason="the rules rejected it",
        failed_at=T0,
    )
    check = checks.events_decided(snap([event], dead_letters=[at(dead)]))
    assert check.ok
    assert not checks.no_dead_letters(snap([event], dead_letters=[at(dead)])).ok


# -- requests answered -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "ok"),
    [
        ([], False),
        ([ResponseStatus.IN_PROGRESS], False),
        ([ResponseStatus.IN_PROGRESS, ResponseStatus.FAILED], False),
        ([ResponseStatus.IN_PROGRESS, ResponseStatus.COMPLETED], True),
        ([ResponseStatus.REFUSED], True),
        ([ResponseStatus.PARTIALLY_REFUSED], True),
    ],
)
def test_a_request_is_answered_only_by_a_final_response(
    statuses: list[ResponseStatus], ok: bool
) -> None:
    request = ev(ErasureRequested, 0, "ev-er", request_id="er-1")
    check = checks.requests_answered(
        snap(
            [request], responses=[at(response("er-1", s), offset=i) for i, s in enumerate(statuses)]
        )
    )
    assert check.checked == 1
    assert check.ok is ok


def test_a_response_for_another_request_does_not_answer() -> None:
    request = ev(AccessRequested, 0, "ev-ac", request_id="ac-1")
    check = checks.requests_answered(
        snap([request], responses=[at(response("ac-2", ResponseStatus.COMPLETED))])
    )
    assert not check.ok


# -- the due-time oracle -------------------------------------------------------------------------


def facts(events: list[Event]) -> tuple[checks.RecordFact, list[checks.ContractFact]]:
    (record,) = (f[0] for f in checks.record_facts(events).values())
    return record, checks.contract_facts(events)


def test_oracle_recordings_are_due_after_the_fixed_period_and_the_client_override() -> None:
    record, contracts = facts([recording(5)])
    assert checks.policy_due(record, contracts, DEMO) == T0 + timedelta(seconds=25)
    record, contracts = facts([recording(5, controller_id="demo-client")])
    assert checks.policy_due(record, contracts, DEMO) == T0 + timedelta(seconds=65)


def test_oracle_contract_records_wait_for_the_end_and_legal_ones_for_the_legal_period() -> None:
    start = ev(ContractStarted, 0, "ev-cs", contract_id="c-1")
    end = ev(ContractEnded, 10, "ev-ce", contract_id="c-1")
    crm = registered(
        "r-crm", "crm", DataCategory.CORRESPONDENCE, LegalBasis.CONTRACT, contract_id="c-1"
    )
    bill = registered(
        "r-bill", "billing-db", DataCategory.BILLING, LegalBasis.LEGAL_OBLIGATION, contract_id="c-1"
    )
    for record_event, due in (
        (crm, T0 + timedelta(seconds=10)),
        (bill, T0 + timedelta(seconds=70)),
    ):
        record, _ = facts([record_event])
        assert checks.policy_due(record, checks.contract_facts([start]), DEMO) is None
        assert checks.policy_due(record, checks.contract_facts([start, end]), DEMO) == due


def test_oracle_without_any_contract_uses_the_default_period() -> None:
    record, contracts = facts(
        [registered("r-1", "crm", DataCategory.CORRESPONDENCE, LegalBasis.CONTRACT)]
    )
    assert checks.policy_due(record, contracts, DEMO) == T0 + timedelta(seconds=120)


def test_contracts_as_of_a_time_ignore_later_events() -> None:
    events = [
        ev(ContractStarted, 0, "a", contract_id="c"),
        ev(ContractEnded, 30, "b", contract_id="c"),
    ]
    (contract,) = checks.contract_facts(events, as_of=T0 + timedelta(seconds=10))
    assert contract.active


# -- due records deleted -----------------------------------------------------------------------

NOW = T0 + timedelta(seconds=60)
GRACE = timedelta(seconds=15)


def test_a_due_record_without_a_delete_is_reported() -> None:
    check = checks.due_records_deleted(snap([recording()]), DEMO, NOW, GRACE)
    assert check.checked == 1
    assert "no DELETE names it" in check.violations[0]


def test_a_delete_never_acknowledged_is_reported() -> None:
    delete = command("cmd-1", Action.DELETE, "call-recorder", 20, ["rec-1"])
    check = checks.due_records_deleted(snap([recording()], [delete]), DEMO, NOW, GRACE)
    assert "never acknowledged" in check.violations[0]
    wrong_system = checks.due_records_deleted(
        snap([recording()], [delete], [ack("cmd-1", "crm")]), DEMO, NOW, GRACE
    )
    assert not wrong_system.ok


def test_an_acknowledged_delete_passes_and_recent_dues_are_not_required_yet() -> None:
    delete = command("cmd-1", Action.DELETE, "call-recorder", 20, ["rec-1"])
    assert checks.due_records_deleted(
        snap([recording()], [delete], [ack("cmd-1", "call-recorder")]), DEMO, NOW, GRACE
    ).ok
    early_check = checks.due_records_deleted(
        snap([recording()]), DEMO, T0 + timedelta(seconds=30), GRACE
    )
    assert early_check.ok
    assert early_check.checked == 0


def test_a_held_record_is_due_only_once_its_hold_is_released() -> None:
    hold = ev(
        LegalHoldPlaced,
        1,
        "ev-hold",
        hold_id="hold-1",
        reason="dispute",
        case_reference="CASE-1",
        categories=[DataCategory.CALL_RECORDING],
    )
    other = registered("r-crm", "crm", DataCategory.CORRESPONDENCE, LegalBasis.CONTRACT)
    still_held = checks.due_records_deleted(
        snap([recording(), hold, other]), DEMO, T0 + timedelta(minutes=5), GRACE
    )
    assert still_held.checked == 1  # only the CRM record, which the hold does not cover
    assert "r-crm" in still_held.violations[0]
    released = ev(LegalHoldReleased, 50, "ev-release", hold_id="hold-1")
    events = [recording(), hold, released]
    assert checks.due_records_deleted(snap(events), DEMO, NOW, GRACE).ok  # released at 50 s
    assert not checks.due_records_deleted(snap(events), DEMO, NOW + GRACE, GRACE).ok


# -- one command id per record -----------------------------------------------------------------


def test_two_command_ids_for_one_record_are_reported_and_a_redelivery_is_not() -> None:
    first = command("cmd-1", Action.DELETE, "call-recorder", 20, ["rec-1"])
    again = command("cmd-1", Action.DELETE, "call-recorder", 31, ["rec-1"], attempt=2)
    other = command("cmd-2", Action.DELETE, "call-recorder", 40, ["rec-1", "rec-2"])
    assert checks.one_command_per_record(snap([recording()], [first, again])).ok
    check = checks.one_command_per_record(snap([recording()], [first, again, other]))
    assert len(check.violations) == 1
    assert "cmd-1" in check.violations[0]
    assert "cmd-2" in check.violations[0]


# -- nothing deleted early ---------------------------------------------------------------------


@pytest.mark.parametrize(("issued", "ok"), [(19.999, False), (20, True), (45, True)])
def test_a_retention_delete_before_the_due_time_is_early(issued: float, ok: bool) -> None:
    delete = command("cmd-1", Action.DELETE, "call-recorder", issued, ["rec-1"])
    assert checks.nothing_deleted_early(snap([recording()], [delete]), DEMO).ok is ok


def test_the_first_issue_of_a_command_is_what_counts() -> None:
    early = command("cmd-1", Action.DELETE, "call-recorder", 10, ["rec-1"])
    retry = command("cmd-1", Action.DELETE, "call-recorder", 25, ["rec-1"], attempt=2)
    assert not checks.nothing_deleted_early(snap([recording()], [retry, early]), DEMO).ok


def test_a_delete_while_the_contract_is_active_is_early() -> None:
    start = ev(ContractStarted, 0, "ev-cs", contract_id="c-1")
    end = ev(ContractEnded, 30, "ev-ce", contract_id="c-1")
    bill = registered(
        "r-bill",
        "billing-db",
        DataCategory.BILLING,
        LegalBasis.LEGAL_OBLIGATION,
        contract_id="c-1",
        seconds=1,
    )
    during = command(
        "cmd-1", Action.DELETE, "billing-db", 20, ["r-bill"], rule_id="N6.legal-obligation"
    )
    at_end = command(
        "cmd-2", Action.DELETE, "billing-db", 30, ["r-bill"], rule_id="N6.legal-obligation"
    )
    after = command(
        "cmd-3", Action.DELETE, "billing-db", 90, ["r-bill"], rule_id="N6.legal-obligation"
    )
    events = [start, bill, end]
    assert (
        "not due at all" in checks.nothing_deleted_early(snap(events, [during]), DEMO).violations[0]
    )
    assert not checks.nothing_deleted_early(snap(events, [at_end]), DEMO).ok
    assert checks.nothing_deleted_early(snap(events, [after]), DEMO).ok


def test_an_erasure_delete_must_follow_its_request() -> None:
    request = ev(ErasureRequested, 10, "ev-er", request_id="er-1")
    before = command("cmd-1", Action.DELETE, "call-recorder", 5, ["rec-1"], request_id="er-1")
    after = command("cmd-1", Action.DELETE, "call-recorder", 11, ["rec-1"], request_id="er-1")
    assert not checks.nothing_deleted_early(snap([recording(), request], [before]), DEMO).ok
    assert checks.nothing_deleted_early(snap([recording(), request], [after]), DEMO).ok


def test_deleting_a_record_never_registered_is_reported() -> None:
    delete = command("cmd-1", Action.DELETE, "call-recorder", 30, ["rec-9"])
    assert (
        "never registered"
        in checks.nothing_deleted_early(snap([recording()], [delete]), DEMO).violations[0]
    )


# -- opt-outs suppressed ------------------------------------------------------------------------


def test_every_opt_out_needs_an_acknowledged_suppression_on_each_marketing_system() -> None:
    from schemas.base import Channel

    opt_out = ev(MarketingOptOutReceived, 0, "ev-oo", channels=[Channel.EMAIL])
    suppress = command(
        "cmd-s",
        Action.SUPPRESS_MARKETING,
        "marketing-platform",
        1,
        request_id="ev-oo",
        rule_id="N1.opt-out",
    )
    assert "no suppression sent" in checks.opt_outs_suppressed(snap([opt_out]), DEMO).violations[0]
    assert (
        "never acknowledged"
        in checks.opt_outs_suppressed(snap([opt_out], [suppress]), DEMO).violations[0]
    )
    assert checks.opt_outs_suppressed(
        snap([opt_out], [suppress], [ack("cmd-s", "marketing-platform")]), DEMO
    ).ok


# -- figures -----------------------------------------------------------------------------------


def test_audit_repeats_count_byte_identical_neighbours_and_repeated_decisions() -> None:
    one, two = audit(["ev-1"], sequence=1), audit(["ev-1"], sequence=2)
    items = [
        At("a", 0, 0, one, b"x"),
        At("a", 0, 1, one, b"x"),  # a producer retry: the same bytes again
        At("a", 0, 2, two, b"y"),  # a replay: the same decision, a new record
    ]
    snapshot = Snapshot(audit=items)
    assert checks.audit_repeats(snapshot) == 1
    assert checks.repeated_decisions(snapshot) == 2


# -- the traffic plan --------------------------------------------------------------------------


def test_the_plan_is_a_function_of_its_seed_and_fits_the_window() -> None:
    first = plan(50, 60, T0, seed=3)
    assert first == plan(50, 60, T0, seed=3)
    assert first != plan(50, 60, T0, seed=4)
    assert all(0 <= p.at <= 60 for p in first)
    assert max(p.at for p in first) > 60 - STORY_S
    assert len({p.event.event_id for p in first}) == len(first)


def test_every_planned_access_request_comes_with_identity_evidence() -> None:
    events = [p.event for p in plan(200, 60, T0, seed=3)]
    asked = {e.request_id for e in events if isinstance(e, AccessRequested)}
    evidence = [e for e in events if isinstance(e, IdentityEvidenceReceived)]
    assert asked
    for request_id in asked:
        kinds = {e.document_type for e in evidence if e.request_id == request_id}
        assert kinds == {DocumentType.PASSPORT, DocumentType.UTILITY_BILL}
    bills = [(e.issued_on, e.event_time.date()) for e in evidence if e.issued_on is not None]
    assert bills
    # Not older than three months when received (N12), and not from the future.
    assert all(received - timedelta(days=89) <= issued <= received for issued, received in bills)


# -- the report --------------------------------------------------------------------------------


def test_the_report_fails_on_a_violation_and_replaces_its_block_in_the_doc(tmp_path: Path) -> None:
    report = RunReport("run-1", settings={"customers": "1"})
    report.checks = [checks.Check("c", "shows", checked=1, violations=["bad thing"])]
    report.faults = [FaultRecord("kill-worker", "kill -9 worker-1", at_s=10, recovered_s=None)]
    assert not report.ok
    assert "FAIL  c" in report.render()
    assert "bad thing" in report.render()
    doc = tmp_path / "chaos.md"
    doc.write_text(f"# Chaos\n\nintro\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    update_doc(doc, report)
    text = doc.read_text()
    assert "old figures" not in text
    assert "not recovered" in text
    assert text.startswith("# Chaos\n\nintro")
    assert text.rstrip().endswith("after")


def test_the_handover_burst_falls_due_at_once_on_every_partition_by_the_oracle() -> None:
    due = T0 + timedelta(minutes=5)
    events = burst(DEMO, due, count=60, partitions=6)
    facts_by_record = checks.record_facts(events)
    assert len(facts_by_record) == 60
    for [fact] in facts_by_record.values():
        assert checks.policy_due(fact, [], DEMO) == due
    assert {partition_of(e.subject_id.encode(), 6) for e in events} == set(range(6))
