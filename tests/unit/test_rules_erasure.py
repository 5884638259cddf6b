"""Erasure (N9) with reasons for what is kept (N10), processors reached (N5)."""

from datetime import UTC, datetime, timedelta

import pytest

from agents.rules.testing import Harness
from schemas.base import DataCategory, DocumentType, RequestType
from schemas.commands import AckOutcome, Action
from schemas.events import (
    CallRecorded,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    LegalHoldPlaced,
)
from schemas.responses import ResponseStatus
from tests.unit.builders import DEMO, NOTICE, identity_evidence, register

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
ICO = "Wycliffe House"


def _former_customer(h: Harness) -> None:
    """Contract ended; billing kept for 7 years, a recording and CRM data still held."""
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    register(
        h, "inv-1", "billing-db", DataCategory.BILLING, "billing-accounting", contract_id="ct-1"
    )
    register(h, "tx-1", "intl-numbers-processor", DataCategory.TRANSACTIONS, contract_id="ct-1")
    h.clock.advance(timedelta(days=100))
    h.send(h.event(ContractEnded, contract_id="ct-1"))
    h.clock.advance(timedelta(days=1))  # a new enquiry after the contract ended
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))


def test_partial_refusal_keeps_legal_obligation_data_with_reason() -> None:
    h = Harness(NOTICE, T0)
    _former_customer(h)
    h.clock.advance(timedelta(days=1))
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    targets = {(c.target_system, tuple(c.record_ids)) for c in d.commands}
    assert targets == {("call-recorder", ("rec-1",)), ("crm", ("lead-1",))}
    assert all(
        c.action is Action.DELETE and c.rule_id == "N9.erasure" and c.request_id == "req-1"
        for c in d.commands
    )
    [first] = d.responses
    assert first.status is ResponseStatus.IN_PROGRESS
    assert first.request_type is RequestType.ERASURE
    # One calendar month; 12 May 2024 is a Sunday, so the end of Monday 13 May (BST).
    assert first.due_at == datetime(2024, 5, 13, 22, 59, 59, 999000, tzinfo=UTC)
    kept = {(k.record_id, k.system) for k in first.kept}
    assert kept == {("inv-1", "billing-db"), ("tx-1", "intl-numbers-processor")}
    assert all(k.reason.startswith("N6.legal-obligation") for k in first.kept)
    assert "erasure-decided" in [a.decision for a in d.audit]

    assert h.ack(d.commands[0]).responses == []  # not final until every command is acked
    final = h.ack(d.commands[1])
    [response] = final.responses
    assert response.status is ResponseStatus.PARTIALLY_REFUSED
    assert response.reasons[0].startswith("N6.legal-obligation")
    assert ICO in response.reasons[-1]
    assert "request-completed" in [a.decision for a in final.audit]
    # Erased records are gone from the state; kept ones and the outcome remain.
    assert final.state is not None
    assert set(final.state.records) == {"billing-db/inv-1", "intl-numbers-processor/tx-1"}
    assert final.state.requests["req-1"].status is ResponseStatus.PARTIALLY_REFUSED
    assert final.state.commands == {}


def test_refused_when_nothing_can_go() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(ContractStarted, contract_id="ct-1"))
    register(h, "inv-1", "billing-db", DataCategory.BILLING, contract_id="ct-1")
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert d.commands == []
    [response] = d.responses
    assert response.status is ResponseStatus.REFUSED
    assert [k.record_id for k in response.kept] == ["inv-1"]
    assert "while a contract is active" in response.kept[0].reason
    assert ICO in response.reasons[-1]
    assert "request-refused" in [a.decision for a in d.audit]


def test_completed_at_once_when_nothing_is_held() -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    [response] = d.responses
    assert (response.status, response.kept, response.reasons) == (ResponseStatus.COMPLETED, [], [])
    assert d.state is not None  # the outcome is kept
    assert d.state.requests["req-1"].final


def test_completed_when_everything_goes() -> None:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    register(h, "web-1", "web-analytics", DataCategory.WEBSITE_VISITS, "website-analytics")
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert {c.target_system for c in d.commands} == {"crm", "web-analytics"}  # N5 processor
    for cmd in d.commands[:-1]:
        h.ack(cmd)
    [response] = h.ack(d.commands[-1], AckOutcome.NOT_HELD).responses
    assert response.status is ResponseStatus.COMPLETED
    assert h.state is not None
    assert h.state.records == {}


def test_legal_hold_keeps_record_with_hold_reason() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.send(
        h.event(
            LegalHoldPlaced,
            hold_id="hold-1",
            reason="Fraud investigation",
            case_reference="CASE-1",
            record_ids=["rec-1"],
        )
    )
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    [response] = d.responses
    assert response.status is ResponseStatus.REFUSED
    assert response.kept[0].reason == (
        "Kept under legal hold hold-1 (case CASE-1): Fraud investigation"
    )


def test_failed_deletion_makes_request_visibly_failed_then_recovers() -> None:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    [cmd] = h.send(h.event(ErasureRequested, request_id="req-1")).commands
    failed = None
    for _ in range(NOTICE.commands.escalate_after_attempts):
        failed = h.ack(cmd, AckOutcome.FAILED)
        due = h.next_due()
        if failed.responses or due is None:
            break
        h.clock.set(due)
        [cmd] = h.tick().commands
    assert failed is not None
    [response] = failed.responses
    assert response.status is ResponseStatus.FAILED
    assert "crm" in response.reasons[0]
    assert [a.decision for a in failed.audit] == [
        "command-failed",
        "command-escalated",
        "request-failed",
    ]
    assert h.state is not None
    assert h.state.requests["req-1"].status is ResponseStatus.FAILED
    # Someone fixes the CRM; its late DONE completes the request.
    [done] = h.ack(cmd).responses
    assert done.status is ResponseStatus.COMPLETED


def test_erasure_waits_for_deletion_already_in_flight() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=30))
    [retention_delete] = h.tick().commands
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert d.commands == []
    assert d.responses[0].status is ResponseStatus.IN_PROGRESS
    [response] = h.ack(retention_delete).responses
    assert response.status is ResponseStatus.COMPLETED


@pytest.mark.parametrize("same_event", [True, False])
def test_repeated_request_issues_nothing_new(same_event: bool) -> None:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    event = h.event(ErasureRequested, request_id="req-1")
    h.send(event)
    again = event if same_event else h.event(ErasureRequested, request_id="req-1")
    d = h.send(again)
    assert (d.commands, d.responses) == ([], [])
    assert [a.decision for a in d.audit] == [
        "duplicate-ignored" if same_event else "duplicate-request"
    ]


@pytest.mark.parametrize(
    ("offset", "decisions"),
    [
        # Due 1 Feb 23:59:59.999 UTC: warned 7 days before, overdue after.
        (timedelta(days=24), []),
        (timedelta(days=25), ["request-due-soon"]),
        (timedelta(days=32), ["request-due-soon", "request-overdue"]),
    ],
)
def test_request_deadline_warnings(offset: timedelta, decisions: list[str]) -> None:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    h.send(h.event(ErasureRequested, request_id="req-1"))
    h.clock.set(T0 + offset)
    d = h.tick()
    assert [a.decision for a in d.audit if a.rule_id == "N13.request-deadline"] == decisions


def test_processor_mode_records_are_passed_to_their_controller() -> None:
    h = Harness(DEMO, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    register(
        h,
        "lead-2",
        "crm",
        DataCategory.FORMS_SURVEYS,
        "client-processing",
        controller_id="demo-client",
    )
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert [c.record_ids for c in d.commands] == [["lead-1"]]
    [response] = d.responses
    assert [
        (k.record_id, k.reason.startswith("Processed on behalf of demo-client"))
        for k in response.kept
    ] == [("lead-2", True)]
    forwarded = [a for a in d.audit if a.decision == "forward-to-controller"]
    assert [(a.controller_id, a.rule_id) for a in forwarded] == [
        ("demo-client", "N2.processor-mode")
    ]


def test_erasure_after_identity_evidence_under_the_same_id_is_carried_out() -> None:
    # Evidence that arrives first leaves a placeholder; the request is still new.
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    identity_evidence(h, "doc-1", DocumentType.PASSPORT, req="req-1")
    d = h.send(h.event(ErasureRequested, request_id="req-1"))
    assert [(c.action, c.record_ids) for c in d.commands] == [(Action.DELETE, ["lead-1"])]
    assert "duplicate-request" not in [a.decision for a in d.audit]
