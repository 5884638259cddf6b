"""Rights workflows through ``decide`` (Harness): deadlines, identity gate, access,
portability, rectification, restriction, objection to profiling, consent,
extension, refusal and complaints (N4, N9-N13)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from agents.rules.context import Decision
from agents.rules.restriction import ALLOWED_WHILE_RESTRICTED
from agents.rules.state import ITEM_PORTABLE
from agents.rules.testing import Harness
from schemas.base import (
    DataCategory,
    DataSource,
    DocumentType,
    LegalBasis,
    ObjectionKind,
    RequestType,
)
from schemas.commands import AckOutcome, Action, Command, CommandAck, ExportedRecord
from schemas.events import (
    AccessRequested,
    ComplaintAnswered,
    ComplaintReceived,
    ConsentGiven,
    ConsentWithdrawn,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    ObjectionReceived,
    PortabilityRequested,
    RectificationRequested,
    RequestExtended,
    RequestRefused,
    RestrictionLifted,
    RestrictionRequested,
)
from schemas.responses import RequestResponse, ResponseStatus
from tests.unit.builders import DEMO, NOTICE, identity_evidence, register

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)  # a Monday


def _end_of_uk_day(day: date, *, bst: bool) -> datetime:
    hour = 22 if bst else 23
    return datetime(day.year, day.month, day.day, hour, 59, 59, 999_000, tzinfo=UTC)


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
        fields=["email", "address"],
    )
    register(
        h,
        "tx-1",
        "intl-numbers-processor",
        DataCategory.TRANSACTIONS,
        contract_id="ct-1",
        source=DataSource.SUPPLIER,
    )
    register(
        h,
        "form-1",
        "crm",
        DataCategory.FORMS_SURVEYS,
        "sales-enquiries",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        fields=["email", "phone"],
    )
    register(
        h,
        "mkt-1",
        "marketing-platform",
        DataCategory.MARKETING_PROFILE,
        "sales-marketing",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        fields=["email"],
    )


def _only(d: Decision) -> RequestResponse:
    [response] = d.responses
    return response


def _ack_all(h: Harness, commands: list[Command], **kw: Any) -> Decision:
    d = h.decisions[-1]
    for command in commands:
        d = h.ack(command, **kw)
    return d


# -- N13 deadlines through open_request ---------------------------------------------------


@pytest.mark.parametrize(
    ("received", "due"),
    [
        # 31 Jan -> 29 Feb 2024 (leap year, last day of February), a Thursday.
        (datetime(2024, 1, 31, 12, 0, tzinfo=UTC), _end_of_uk_day(date(2024, 2, 29), bst=False)),
        # 29 Feb 2024 -> 29 Mar 2024 is Good Friday; Sat, Sun, Easter Monday -> Tue 2 Apr (BST).
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), _end_of_uk_day(date(2024, 4, 2), bst=True)),
        # 31 Jan 2023 -> 28 Feb 2023 (common year), a Tuesday.
        (datetime(2023, 1, 31, 12, 0, tzinfo=UTC), _end_of_uk_day(date(2023, 2, 28), bst=False)),
        # 26 Apr 2024 -> 26 May is a Sunday, 27 May Spring bank holiday -> Tue 28 May.
        (datetime(2024, 4, 26, 12, 0, tzinfo=UTC), _end_of_uk_day(date(2024, 5, 28), bst=True)),
        # 23:30 UTC on 31 Mar 2024 is 1 Apr in the UK -> due 1 May 2024 (Wed).
        (datetime(2024, 3, 31, 23, 30, tzinfo=UTC), _end_of_uk_day(date(2024, 5, 1), bst=True)),
    ],
)
def test_rights_request_due_date_is_a_uk_calendar_month(received: datetime, due: datetime) -> None:
    h = Harness(NOTICE, received)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    response = _only(h.send(h.event(ErasureRequested, request_id="r-1")))
    assert response.due_at == due


@pytest.mark.parametrize(
    ("policy", "request_type", "expected"),
    [
        (NOTICE, "complaint", _end_of_uk_day(date(2024, 4, 3), bst=True)),  # 30 days, no roll
        (DEMO, "complaint", T0 + timedelta(minutes=5)),
        (DEMO, "rectification", T0 + timedelta(minutes=5)),  # compressed demo durations
        (NOTICE, "rectification", _end_of_uk_day(date(2024, 4, 4), bst=True)),
    ],
)
def test_due_dates_by_policy_calendar(policy: Any, request_type: str, expected: datetime) -> None:
    h = Harness(policy, T0)
    if request_type == "complaint":
        d = h.send(h.event(ComplaintReceived, complaint_id="r-1", summary="no answer"))
    else:
        d = h.send(h.event(RectificationRequested, request_id="r-1", corrections={"email": "x"}))
    assert d.responses[-1].due_at == expected
    assert h.state is not None
    assert h.state.requests["r-1"].due_at == expected


@pytest.mark.parametrize(
    ("offset", "decisions"),
    [
        (timedelta(days=24), []),
        (timedelta(days=25), ["request-due-soon"]),  # due 4 Apr 23:59 BST, warned 28 Mar
        (timedelta(days=32), ["request-due-soon", "request-overdue"]),
    ],
)
def test_due_soon_and_overdue_audits_leave_request_open(
    offset: timedelta, decisions: list[str]
) -> None:
    h = Harness(NOTICE, T0)
    register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS, fields=["email"])
    h.send(h.event(RectificationRequested, request_id="r-1", corrections={"email": "x"}))
    h.clock.set(T0 + offset)
    d = h.tick()
    assert [a.decision for a in d.audit if a.rule_id == "N13.request-deadline"] == decisions
    assert h.state is not None  # still tracked, never silently closed
    request = h.state.requests["r-1"]
    assert not request.final
    assert request.overdue is ("request-overdue" in decisions)


# -- N12 identity gate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "verified", "missing", "rejected"),
    [
        ([], False, 2, 0),
        ([("e1", DocumentType.PASSPORT, None)], False, 1, 0),
        # A bill older than three months does not count.
        (
            [
                ("e1", DocumentType.PASSPORT, None),
                ("e2", DocumentType.UTILITY_BILL, date(2023, 11, 1)),
            ],
            False,
            1,
            1,
        ),
        # Missing photo ID: two supporting documents are not enough.
        (
            [
                ("e1", DocumentType.BIRTH_CERTIFICATE, None),
                ("e2", DocumentType.UTILITY_BILL, date(2024, 2, 1)),
            ],
            False,
            1,
            0,
        ),
        (
            [
                ("e1", DocumentType.DRIVING_LICENCE, None),
                ("e2", DocumentType.UTILITY_BILL, date(2024, 2, 1)),
            ],
            True,
            0,
            0,
        ),
    ],
)
def test_access_waits_for_identity(
    evidence: list[tuple[str, DocumentType, date | None]],
    verified: bool,
    missing: int,
    rejected: int,
) -> None:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    d = h.send(h.event(AccessRequested, request_id="r-1"))
    for evidence_id, kind, issued in evidence:
        d = identity_evidence(h, evidence_id, kind, issued)
    assert h.state is not None
    request = h.state.requests["r-1"]
    if verified:
        assert request.status is ResponseStatus.IN_PROGRESS
        assert [c.action for c in d.commands] == [Action.EXPORT]
        assert d.responses[-1].due_at == _end_of_uk_day(date(2024, 4, 4), bst=True)
    else:
        response = d.responses[-1]
        assert response.status is ResponseStatus.AWAITING_IDENTITY
        assert response.due_at is None  # the clock has not started
        assert len(response.missing_evidence) == missing
        assert len(response.reasons) == rejected
        assert d.commands == []
        assert sum(a.decision == "identity-evidence-rejected" for a in d.audit) == rejected


@pytest.mark.parametrize("evidence_first", [True, False])
def test_clock_starts_when_identity_is_verified(evidence_first: bool) -> None:
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    if evidence_first:
        identity_evidence(h, "e1", DocumentType.PASSPORT)
        h.clock.advance(timedelta(days=3))
        d = h.send(h.event(AccessRequested, request_id="r-1"))
        h.clock.advance(timedelta(days=7))
        d = identity_evidence(h, "e2", DocumentType.BIRTH_CERTIFICATE)
    else:
        h.send(h.event(AccessRequested, request_id="r-1"))
        h.clock.advance(timedelta(days=10))
        identity_evidence(h, "e1", DocumentType.PASSPORT)
        d = identity_evidence(h, "e2", DocumentType.BIRTH_CERTIFICATE)
    # Verified on Thu 14 Mar 2024 -> due Mon 15 Apr (14 Apr is a Sunday).
    assert d.responses[-1].status is ResponseStatus.IN_PROGRESS
    assert d.responses[-1].due_at == _end_of_uk_day(date(2024, 4, 15), bst=True)
    assert "identity-verified" in [a.decision for a in d.audit]


def test_unclaimed_evidence_is_discarded_and_identity_chased() -> None:
    h = Harness(NOTICE, T0)
    identity_evidence(h, "e1", DocumentType.PASSPORT, req="orphan")
    h.send(h.event(AccessRequested, request_id="r-1"))
    h.clock.set(T0 + timedelta(days=40))
    d = h.tick()
    assert sorted(a.decision for a in d.audit) == [
        "identity-evidence-discarded",
        "identity-still-awaited",
    ]
    assert h.state is not None
    assert set(h.state.requests) == {"r-1"}
    assert h.state.requests["r-1"].status is ResponseStatus.AWAITING_IDENTITY


def _verify(h: Harness, req: str = "r-1") -> Decision:
    identity_evidence(h, f"{req}-p", DocumentType.PASSPORT, req=req)
    return identity_evidence(h, f"{req}-b", DocumentType.BIRTH_CERTIFICATE, req=req)


# -- N11 access ----------------------------------------------------------------------------


def test_access_end_to_end_builds_the_report() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    h.send(h.event(AccessRequested, request_id="r-1"))
    d = _verify(h)
    exports = d.commands
    assert {(c.action, c.target_system) for c in exports} == {
        (Action.EXPORT, s)
        for s in ("billing-db", "crm", "intl-numbers-processor", "marketing-platform")
    }
    crm = next(c for c in exports if c.target_system == "crm")
    assert (crm.record_ids, crm.categories) == (["form-1"], [DataCategory.FORMS_SURVEYS])
    for command in exports[:-1]:
        assert h.ack(command).responses == []
    last = exports[-1]
    d = h.send(
        CommandAck(
            command_id=last.command_id,
            subject_id="cust-1",
            system=last.target_system,
            outcome=AckOutcome.DONE,
            acked_at=h.clock.now(),
            export_reference="exp-42",
        )
    )
    response = _only(d)
    assert response.status is ResponseStatus.COMPLETED
    assert response.body_json is not None
    report = json.loads(response.body_json)
    assert {r["record_id"] for r in report["records"]} == {"inv-1", "tx-1", "form-1", "mkt-1"}
    assert [r["system"] for r in report["recipients"]] == ["intl-numbers-processor"]
    assert [a["name"] for a in report["automated_decisions"]] == [
        "E-mail, SMS and telephone marketing platform"
    ]
    assert {i["purpose"] for i in report["legitimate_interests"]} == {
        "sales-enquiries",
        "sales-marketing",
    }
    assert [s["source"] for s in report["sources"]] == ["supplier"]
    assert report["exports"] == [{"system": last.target_system, "export_reference": "exp-42"}]
    assert report["complaint_authority"]["address"].startswith("Wycliffe House")


def test_access_with_failing_export_ends_visibly_failed() -> None:
    h = Harness(DEMO, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    h.send(h.event(AccessRequested, request_id="r-1"))
    [export] = _verify(h).commands
    d = h.ack(export, AckOutcome.FAILED)
    for _ in range(DEMO.commands.escalate_after_attempts):
        h.clock.advance(timedelta(minutes=1))
        d = h.tick()
        if d.responses:
            break
    assert d.responses[-1].status is ResponseStatus.FAILED


def test_access_with_nothing_held_completes_at_once() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(AccessRequested, request_id="r-1"))
    d = _verify(h)
    assert d.commands == []
    assert d.responses[-1].status is ResponseStatus.COMPLETED
    assert json.loads(d.responses[-1].body_json or "{}")["records"] == []


# -- portability ---------------------------------------------------------------------------


def _exported(record_id: str, provided: bool, value: str = "a@example.com") -> ExportedRecord:
    return ExportedRecord(
        record_id=record_id,
        category=DataCategory.FORMS_SURVEYS,
        provided_by_subject=provided,
        fields={"email": value},
    )


@pytest.mark.parametrize(("value_size", "too_large"), [(10, False), (900, True)])
def test_portability_exports_what_the_subject_provided(value_size: int, too_large: bool) -> None:
    h = Harness(NOTICE, T0)
    register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    register(
        h,
        "pub-1",
        "crm",
        DataCategory.THIRD_PARTY_PUBLIC,
        "sales-enquiries",
        source=DataSource.PUBLIC_SOURCE,
    )
    h.send(h.event(PortabilityRequested, request_id="r-1"))
    [export] = _verify(h).commands
    assert (export.target_system, export.record_ids) == ("crm", ["form-1"])
    count = 600 if too_large else 1
    d = h.send(
        CommandAck(
            command_id=export.command_id,
            subject_id="cust-1",
            system="crm",
            outcome=AckOutcome.DONE,
            acked_at=h.clock.now(),
            export_reference="exp-7",
            exported=[_exported(f"form-{i}", True, "v" * value_size) for i in range(count)]
            + [_exported("pub-1", False)],
        )
    )
    response = _only(d)
    assert response.status is ResponseStatus.COMPLETED
    body = json.loads(response.body_json or "{}")
    assert body.get("too_large", False) is too_large
    if too_large:
        assert body["exports"] == [{"system": "crm", "export_reference": "exp-7"}]
        assert response.reasons
    else:
        assert [r["record_id"] for r in json.loads(body["json"])["records"]] == ["form-0"]
        assert body["csv"].splitlines()[1] == "crm,form-0,forms_surveys,email," + "v" * 10
    assert h.state is not None
    assert h.state.request_items("r-1", ITEM_PORTABLE) == {}  # exported values leave the state


# -- rectification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("corrections", "systems", "not_held"),
    [
        ({"email": "new@example.com"}, {"billing-db", "crm", "marketing-platform"}, []),
        ({"phone": "0123"}, {"crm"}, []),
        ({"phone": "0123", "fax": "9"}, {"crm"}, ["fax"]),
        ({"fax": "9"}, set(), ["fax"]),
    ],
)
def test_rectification_goes_where_the_fields_are(
    corrections: dict[str, str], systems: set[str], not_held: list[str]
) -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    d = h.send(h.event(RectificationRequested, request_id="r-1", corrections=corrections))
    assert {c.target_system for c in d.commands} == systems
    for command in d.commands:
        assert command.action is Action.RECTIFY
        assert set(command.parameters) <= set(corrections)
    if systems:
        d = _ack_all(h, d.commands)
    response = d.responses[-1]
    assert response.status is ResponseStatus.COMPLETED
    assert any("fax" in r for r in response.reasons) is bool(not_held)
    assert all("new@example.com" not in v for a in d.audit for v in a.details.values())


# -- restriction ---------------------------------------------------------------------------


def test_restriction_then_lift() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    d = h.send(h.event(RestrictionRequested, request_id="r-1", reason="accuracy contested"))
    assert {c.action for c in d.commands} == {Action.RESTRICT}
    assert len(d.commands) == 4
    assert h.state is not None
    assert h.state.restricted
    assert _ack_all(h, d.commands).responses[-1].status is ResponseStatus.COMPLETED
    # A record registered while restricted is restricted too.
    register(
        h,
        "corr-1",
        "crm",
        DataCategory.CORRESPONDENCE,
        "sales-enquiries",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
    )
    d = h.decisions[-1]
    assert [(c.action, c.record_ids) for c in d.commands] == [(Action.RESTRICT, ["corr-1"])]
    d = h.send(h.event(RestrictionLifted, request_id="r-1"))
    assert {c.action for c in d.commands} == {Action.LIFT_RESTRICTION}
    assert sorted(i for c in d.commands for i in c.record_ids) == [
        "corr-1",
        "form-1",
        "inv-1",
        "mkt-1",
        "tx-1",
    ]
    assert h.state is not None
    assert not h.state.restricted


def test_nothing_but_storage_and_requested_actions_go_out_while_restricted() -> None:
    h = Harness(NOTICE, T0)
    _customer(h)
    h.send(h.event(RestrictionRequested, request_id="r-1", reason="accuracy contested"))
    h.send(h.event(ConsentGiven, purpose="website-analytics"))
    register(
        h,
        "web-1",
        "web-analytics",
        DataCategory.WEBSITE_VISITS,
        "website-analytics",
        basis=LegalBasis.CONSENT,
        source=DataSource.OBSERVED,
    )
    h.send(h.event(ConsentWithdrawn, purpose="website-analytics"))
    h.send(h.event(ObjectionReceived, request_id="r-2", kind=ObjectionKind.AUTOMATED_PROCESSING))
    h.send(h.event(RectificationRequested, request_id="r-3", corrections={"email": "x"}))
    h.send(h.event(ContractEnded, contract_id="ct-1"))  # retention deletes what is not needed
    h.clock.advance(timedelta(days=1))
    h.tick()
    sent = [c for d in h.decisions[5:] for c in d.commands]
    assert {c.action for c in sent} <= ALLOWED_WHILE_RESTRICTED
    deletes = [c for c in sent if c.action is Action.DELETE]
    assert deletes  # retention still applies ...
    audited = [a for d in h.decisions for a in d.audit if a.decision == "deletion-while-restricted"]
    assert {a.command_ids_out[0] for a in audited} == {c.command_id for c in deletes}  # ... audited


# -- objection to profiling, consent ------------------------------------------------------


@pytest.mark.parametrize(
    ("with_marketing_record", "systems"), [(True, ["marketing-platform"]), (False, [])]
)
def test_objection_to_profiling(with_marketing_record: bool, systems: list[str]) -> None:
    h = Harness(NOTICE, T0)
    register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    if with_marketing_record:
        register(
            h,
            "mkt-1",
            "marketing-platform",
            DataCategory.MARKETING_PROFILE,
            "sales-marketing",
            basis=LegalBasis.LEGITIMATE_INTERESTS,
        )
    d = h.send(
        h.event(ObjectionReceived, request_id="r-1", kind=ObjectionKind.AUTOMATED_PROCESSING)
    )
    assert [(c.action, c.target_system, c.parameters) for c in d.commands] == [
        (Action.STOP_PROCESSING, s, {"purpose": "profiling"}) for s in systems
    ]
    if systems:
        d = _ack_all(h, d.commands)
    response = d.responses[-1]
    assert response.status is ResponseStatus.COMPLETED
    assert ("marketing-platform" in response.reasons[0]) is with_marketing_record


def test_objection_to_direct_marketing_still_suppresses() -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(ObjectionReceived, request_id="r-1", kind=ObjectionKind.DIRECT_MARKETING))
    assert [c.action for c in d.commands] == [Action.SUPPRESS_MARKETING]


def test_consent_withdrawal_stops_only_consent_based_processing() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(ConsentGiven, purpose="website-analytics"))
    register(
        h,
        "web-1",
        "web-analytics",
        DataCategory.WEBSITE_VISITS,
        "website-analytics",
        basis=LegalBasis.CONSENT,
        source=DataSource.OBSERVED,
    )
    register(
        h,
        "web-2",
        "web-analytics",
        DataCategory.WEB_BEHAVIOUR_STATS,
        "website-analytics",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        source=DataSource.OBSERVED,
    )
    register(
        h,
        "dw-1",
        "data-warehouse",
        DataCategory.WEB_BEHAVIOUR_STATS,
        "fraud-prevention",
        basis=LegalBasis.CONSENT,
        source=DataSource.OBSERVED,
    )
    d = h.send(h.event(ConsentWithdrawn, purpose="website-analytics"))
    assert [(c.action, c.target_system, c.record_ids) for c in d.commands] == [
        (Action.STOP_PROCESSING, "web-analytics", ["web-1"])
    ]
    [audit] = d.audit
    assert (audit.decision, audit.details["other-basis"]) == ("consent-withdrawn", "1")
    assert h.state is not None
    assert h.state.consents["website-analytics"].withdrawn_at == T0


@pytest.mark.parametrize(
    ("purpose", "audits"),
    [
        ("website-analytics", ["consent-recorded"]),
        ("service-delivery", ["consent-recorded", "consent-not-the-basis"]),
    ],
)
def test_consent_given_is_recorded(purpose: str, audits: list[str]) -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(ConsentGiven, purpose=purpose))
    assert [a.decision for a in d.audit] == audits
    assert h.state is not None
    assert h.state.consents[purpose].given_at == T0


# -- extension, refusal, complaint --------------------------------------------------------


@pytest.mark.parametrize(
    ("months_each", "at", "outcomes", "due"),
    [
        ([2], timedelta(days=1), ["request-extended"], date(2024, 6, 4)),
        ([1, 1], timedelta(days=1), ["request-extended", "request-extended"], date(2024, 6, 4)),
        ([2, 1], timedelta(days=1), ["request-extended", "extension-refused"], date(2024, 6, 4)),
        ([1], timedelta(days=40), ["extension-refused"], date(2024, 4, 4)),
    ],
)
def test_extension(months_each: list[int], at: timedelta, outcomes: list[str], due: date) -> None:
    h = Harness(NOTICE, T0)
    register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS)
    h.send(h.event(ErasureRequested, request_id="r-2"))
    h.clock.set(T0 + at)
    seen: list[str] = []
    for months in months_each:
        d = h.send(h.event(RequestExtended, request_id="r-2", months=months, reason="complex"))
        seen += [a.decision for a in d.audit if a.rule_id == "N13.extension"]
    assert seen == outcomes
    assert h.state is not None
    assert h.state.requests["r-2"].due_at == _end_of_uk_day(due, bst=True)


@pytest.mark.parametrize("gated", [True, False])
def test_refusal_gives_reason_and_route_to_ico(gated: bool) -> None:
    h = Harness(NOTICE, T0)
    if gated:
        h.send(h.event(AccessRequested, request_id="r-1"))
    else:
        register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS)
        h.send(h.event(ErasureRequested, request_id="r-1"))
    d = h.send(h.event(RequestRefused, request_id="r-1", reason="Manifestly unfounded"))
    response = _only(d)
    assert response.status is ResponseStatus.REFUSED
    assert response.reasons[0] == "Manifestly unfounded"
    assert "Information Commissioner" in response.reasons[1]
    body = json.loads(response.body_json or "{}")
    assert "Manifestly unfounded" in body["text"]
    assert "Wycliffe House" in body["text"]
    again = h.send(h.event(RequestRefused, request_id="r-1", reason="again"))
    assert [a.decision for a in again.audit] == ["request-already-closed"]


def test_complaint_is_tracked_with_thirty_day_deadline() -> None:
    h = Harness(NOTICE, T0)
    response = _only(h.send(h.event(ComplaintReceived, complaint_id="c-1", summary="slow")))
    assert (response.request_type, response.status) == (
        RequestType.COMPLAINT,
        ResponseStatus.IN_PROGRESS,
    )
    assert "2024-04-03" in response.reasons[0]
    h.clock.set(T0 + timedelta(days=31))
    assert "request-overdue" in [a.decision for a in h.tick().audit]


@pytest.mark.parametrize("late", [False, True])
def test_answered_complaint_is_closed_with_the_answer(late: bool) -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(ComplaintReceived, complaint_id="c-1", summary="slow"))
    if late:
        h.clock.set(T0 + timedelta(days=31))
        h.tick()
    d = h.send(h.event(ComplaintAnswered, complaint_id="c-1", answer="We fixed the bill."))
    response = _only(d)
    assert response.status is ResponseStatus.COMPLETED
    assert response.reasons[0] == "We fixed the bill."
    assert "ICO" in response.reasons[1]
    [done] = [a for a in d.audit if a.decision == "request-completed"]
    assert done.details["overdue"] == str(late).lower()
    again = h.send(h.event(ComplaintAnswered, complaint_id="c-1", answer="again"))
    assert [a.decision for a in again.audit] == ["request-already-closed"]
    assert again.responses == []


def test_answering_something_that_is_not_a_complaint_is_refused() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(AccessRequested, request_id="req-1"))  # open, awaiting identity
    d = h.send(h.event(ComplaintAnswered, complaint_id="req-1", answer="?"))
    assert [a.decision for a in d.audit] == ["not-a-complaint"]
    assert d.responses == []


def test_lift_before_restrict_is_acknowledged_withdraws_it() -> None:
    # A RESTRICT still unacknowledged at the lift is never re-sent afterwards,
    # and its late ack does not answer "restricted".
    h = Harness(NOTICE, T0)
    register(h, "lead-1", "crm", DataCategory.FORMS_SURVEYS, "sales-enquiries")
    d = h.send(h.event(RestrictionRequested, request_id="req-r", reason="accuracy contested"))
    [restrict] = [c for c in d.commands if c.action is Action.RESTRICT]
    lifted = h.send(h.event(RestrictionLifted, request_id="req-r"))
    assert [c.action for c in lifted.commands] == [Action.LIFT_RESTRICTION]
    assert "command-superseded" in [a.decision for a in lifted.audit]
    assert [r.status for r in lifted.responses] == [ResponseStatus.COMPLETED]
    h.clock.advance(timedelta(days=2))
    later = h.tick()
    assert all(c.command_id != restrict.command_id for c in later.commands)
    late = h.ack(restrict)
    assert late.responses == []
    assert h.state is not None
    assert not h.state.restricted
