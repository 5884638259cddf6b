"""Data-subject rights end to end on the real broker (N9-N13).

The real ``lifecycle worker`` process, the reference downstream consumers and
the privacy-desk CLI, against the session broker:

* access (N11, N12): records in three systems, identity evidence arriving late
  (a passport, a bill one day too old, then a bill exactly three months old),
  EXPORT to every holding system, the access report in the COMPLETED answer,
  rendered to HTML by ``lifecycle desk render``;
* restriction (N9): RESTRICT to the holding systems, only allowed actions while
  it holds, LIFT_RESTRICTION after ``RestrictionLifted``;
* objection to direct marketing (N9, N1): SUPPRESS_MARKETING to every marketing
  system in the decision that took the objection;
* deadlines (N13): with the demo policy (requests due after 5 minutes) a request
  received longer ago than that is audited ``request-overdue``, counted in
  ``lifecycle_requests_open{bucket="overdue"}`` and left open.

The notice-policy tests share one worker (starting one costs seconds); each uses
its own subject.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.rights.deadlines import add_calendar_months, rights_request_due, uk_date
from agents.rights.identity import MISSING_PHOTO_ID, MISSING_SUPPORTING
from agents.rules import ids
from agents.rules.restriction import ALLOWED_WHILE_RESTRICTED
from agents.tools.downstream import Behaviour
from schemas.audit import AuditEvent
from schemas.base import (
    Channel,
    DataCategory,
    DataSource,
    DocumentType,
    LegalBasis,
    ObjectionKind,
    RequestType,
)
from schemas.commands import AckOutcome, Action, Command, CommandAck
from schemas.events import (
    AccessRequested,
    ErasureRequested,
    Event,
    IdentityEvidenceReceived,
    ObjectionReceived,
    RestrictionLifted,
    RestrictionRequested,
)
from schemas.responses import RequestResponse, ResponseStatus
from tests.integration.events import call_recorded, desk_request, opted_out, registered
from tests.integration.pipeline import (
    DEMO_POLICY,
    EXTRA_MARKETING_SYSTEM,
    NOTICE_POLICY,
    Pipeline,
    answering_pipelines,
    pipelines,
    run_desk,
    subject_commands,
    wait_decided,
    wait_for,
    with_second_marketing_system,
)


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One worker on the notice policy (plus a second marketing system), every
    downstream system answering."""
    workdir = tmp_path_factory.mktemp("rights-e2e")
    policy = with_second_marketing_system(NOTICE_POLICY, workdir)
    yield from answering_pipelines(kafka_bootstrap, workdir, policy_path=policy)


# -- helpers ------------------------------------------------------------------


def evidence(
    subject: str,
    request_id: str,
    evidence_id: str,
    document_type: DocumentType,
    *,
    when: datetime,
    issued_on: Any = None,
) -> IdentityEvidenceReceived:
    return desk_request(
        IdentityEvidenceReceived,
        subject,
        request_id,
        event_id=f"ev-{evidence_id}",
        when=when,
        evidence_id=evidence_id,
        document_type=document_type,
        issued_on=issued_on,
    )


def commands_for(
    pipeline: Pipeline, subject: str, systems: list[str] | None = None
) -> list[Command]:
    """The subject's commands on the given systems' topics (all systems by default)."""
    out: list[Command] = []
    for system in systems or [s.id for s in pipeline.policy.systems]:
        out += subject_commands(pipeline, system, subject)
    return out


def responses_for(pipeline: Pipeline, request_id: str) -> list[RequestResponse]:
    return [
        r
        for r in pipeline.models(pipeline.names.responses, RequestResponse)
        if r.request_id == request_id
    ]


def wait_response(
    pipeline: Pipeline, request_id: str, what: str, condition: Any, timeout: float = 60
) -> list[RequestResponse]:
    found: list[RequestResponse] = []

    def check() -> bool:
        nonlocal found
        found = responses_for(pipeline, request_id)
        return bool(condition(found))

    wait_for(check, timeout, f"responses to {request_id}: {what}", alive=pipeline.process)
    return found


def audit_for(pipeline: Pipeline, request_id: str) -> list[AuditEvent]:
    return [
        e
        for e in pipeline.models(pipeline.names.audit, AuditEvent)
        if e.details.get("request-id") == request_id
    ]


def wait_audit(
    pipeline: Pipeline, request_id: str, decision: str, timeout: float = 60
) -> list[AuditEvent]:
    found: list[AuditEvent] = []

    def check() -> bool:
        nonlocal found
        found = [e for e in audit_for(pipeline, request_id) if e.decision == decision]
        return bool(found)

    wait_for(check, timeout, f"audit {decision} for {request_id}", alive=pipeline.process)
    return found


def wait_commands(
    pipeline: Pipeline,
    subject: str,
    what: str,
    condition: Any,
    systems: list[str] | None = None,
    timeout: float = 60,
) -> list[Command]:
    found: list[Command] = []

    def check() -> bool:
        nonlocal found
        found = commands_for(pipeline, subject, systems)
        return bool(condition(found))

    wait_for(check, timeout, f"commands for {subject}: {what}", alive=pipeline.process)
    return found


def wait_registered(pipeline: Pipeline, events: list[Any]) -> None:
    wait_decided(pipeline, events, "records registered")


# -- N9/N11/N12: access ---------------------------------------------------------


def test_access_request_waits_for_identity_then_exports_and_answers_with_the_report(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    subject, request_id = "cust-access", "req-access-1"
    now = datetime.now(UTC)
    records = [
        registered(subject, "crm-form-1", "crm", DataCategory.FORMS_SURVEYS, when=now),
        registered(
            subject,
            "inv-1",
            "billing-db",
            DataCategory.BILLING,
            when=now,
            basis=LegalBasis.LEGAL_OBLIGATION,
            purpose="billing-accounting",
            source_system="billing",
        ),
        registered(
            subject,
            "visit-1",
            "web-analytics",
            DataCategory.WEBSITE_VISITS,
            when=now,
            basis=LegalBasis.CONSENT,
            purpose="website-analytics",
            source=DataSource.OBSERVED,
            source_system="web-analytics",
        ),
    ]
    holding = sorted({r.system for r in records})
    for event in records:
        pipeline.publish(event)
    wait_registered(pipeline, records)

    pipeline.publish(desk_request(AccessRequested, subject, request_id, event_id="ev-access-1"))
    (first,) = wait_response(pipeline, request_id, "awaiting identity", lambda rs: rs)
    assert first.status is ResponseStatus.AWAITING_IDENTITY
    assert first.request_type is RequestType.ACCESS
    assert first.missing_evidence == [MISSING_PHOTO_ID, MISSING_SUPPORTING]
    assert first.due_at is None  # the clock waits for identity (N12, N13)

    # Late evidence: a passport alone is not enough.
    pipeline.publish(
        evidence(subject, request_id, "passport-1", DocumentType.PASSPORT, when=datetime.now(UTC))
    )
    responses = wait_response(pipeline, request_id, "passport noted", lambda rs: len(rs) >= 2)
    assert [r.status for r in responses] == [ResponseStatus.AWAITING_IDENTITY] * 2
    assert responses[1].missing_evidence == [MISSING_SUPPORTING]
    assert responses[1].reasons == []

    # A utility bill issued one day more than three months before it was received.
    received = datetime.now(UTC)
    cutoff = add_calendar_months(uk_date(received), -3)
    stale = evidence(
        subject,
        request_id,
        "bill-stale",
        DocumentType.UTILITY_BILL,
        when=received,
        issued_on=cutoff - timedelta(days=1),
    )
    pipeline.publish(stale)
    responses = wait_response(pipeline, request_id, "stale bill judged", lambda rs: len(rs) >= 3)
    rejected = responses[2]
    assert rejected.status is ResponseStatus.AWAITING_IDENTITY
    assert rejected.missing_evidence == [MISSING_SUPPORTING]
    (reason,) = rejected.reasons
    assert "bill-stale" in reason
    assert "older than three months" in reason
    assert cutoff.isoformat() in reason
    (audited,) = wait_audit(pipeline, request_id, "identity-evidence-rejected")
    assert audited.details["evidence-id"] == "bill-stale"
    assert "older than three months" in audited.details["reason"]
    assert not [c for c in commands_for(pipeline, subject) if c.action is Action.EXPORT]

    # A bill issued exactly three months before it was received counts.
    verified_at = datetime.now(UTC)
    fresh = evidence(
        subject,
        request_id,
        "bill-fresh",
        DocumentType.UTILITY_BILL,
        when=verified_at,
        issued_on=add_calendar_months(uk_date(verified_at), -3),
    )
    pipeline.publish(fresh)
    (verified,) = wait_audit(pipeline, request_id, "identity-verified")
    assert verified.details["photo-id"] == "passport-1"
    assert verified.details["supporting"] == "bill-fresh"

    exports = wait_commands(
        pipeline,
        subject,
        "an EXPORT to every holding system",
        lambda cs: {c.target_system for c in cs if c.action is Action.EXPORT} >= set(holding),
    )
    exports = [c for c in exports if c.action is Action.EXPORT]
    assert sorted(c.target_system for c in exports) == holding
    assert all(c.request_id == request_id and c.rule_id == "N11.access" for c in exports)
    by_system = {c.target_system: c for c in exports}
    for event in records:
        assert by_system[event.system].record_ids == [event.record_id]

    responses = wait_response(
        pipeline,
        request_id,
        "completed",
        lambda rs: any(r.status is ResponseStatus.COMPLETED for r in rs),
    )
    (done,) = [r for r in responses if r.status is ResponseStatus.COMPLETED]
    assert done.due_at == rights_request_due(verified_at)  # clock from verification (N13)
    assert done.body_json is not None
    report = json.loads(done.body_json)
    assert report["request_id"] == request_id
    assert report["subject_id"] == subject

    # N11: the categories, the systems holding them and the records.
    assert {c["category"]: c["systems"] for c in report["categories"]} == {
        "forms_surveys": ["crm"],
        "billing": ["billing-db"],
        "website_visits": ["web-analytics"],
    }
    assert sorted((r["system"], r["record_id"]) for r in report["records"]) == sorted(
        (e.system, e.record_id) for e in records
    )
    assert {p["legal_basis"] for p in report["purposes"]} == {
        "contract",
        "legal_obligation",
        "consent",
    }
    assert [s["source"] for s in report["sources"]] == ["observed"]
    # N5: the processor holding data is a recipient; our own systems are not.
    assert [r["system"] for r in report["recipients"]] == ["web-analytics"]
    # Contacts of the controller, the DPO and the ICO, and the route to complain.
    policy = pipeline.policy
    assert report["controller"]["name"] == policy.controller.name
    assert report["controller"]["email"] == policy.controller.email
    assert report["dpo"]["name"] == policy.dpo.name
    assert report["dpo"]["email"] == policy.dpo.email
    assert report["complaint_authority"]["name"] == policy.ico.name
    assert report["complaint_authority"]["address"] == policy.ico.address
    assert "ICO" in report["complaint_statement"]
    assert report["rights"]
    assert report["withdraw_consent"]
    assert report["statutory_requirement"]
    # The export references are the downstream systems' own.
    acked = {
        a.command_id: a.export_reference
        for a in pipeline.models(pipeline.names.acks, CommandAck)
        if a.outcome is AckOutcome.DONE
    }
    assert {(e["system"], e["export_reference"]) for e in report["exports"]} == {
        (c.target_system, acked[c.command_id]) for c in exports
    }
    assert all(e["export_reference"] for e in report["exports"])

    # The privacy desk renders the answer for the subject.
    out = tmp_path / "report.html"
    result = run_desk(pipeline, "render", request_id, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "html" in result.stdout
    assert request_id in result.stdout
    page = out.read_text(encoding="utf-8")
    for section in (
        "controller",
        "dpo",
        "purposes",
        "legitimate-interests",
        "categories",
        "records",
        "retention",
        "sources",
        "recipients",
        "rights",
        "withdraw-consent",
        "complaints",
        "statutory",
        "automated",
        "exports",
    ):
        assert f'<section id="{section}">' in page
    text = html.unescape(page)
    assert request_id in text
    assert policy.controller.name in text
    assert policy.ico.name in text
    assert policy.ico.address
    assert policy.ico.address in text
    for event in records:
        assert event.record_id in text
    for command in exports:
        assert acked[command.command_id] in text


def test_erasure_whose_identity_evidence_arrived_first_is_still_carried_out(
    pipeline: Pipeline,
) -> None:
    """Evidence under a request id makes a placeholder; an erasure (which needs no
    identity) under that id is a new request, not a duplicate (regression)."""
    subject, request_id = "cust-erase-ev", "req-erase-ev"
    held = registered(
        subject, "letter-e1", "crm", DataCategory.CORRESPONDENCE, when=datetime.now(UTC)
    )
    pipeline.publish(held)
    # The desk logs the ID documents it received with the request before the request.
    pipeline.publish(
        evidence(subject, request_id, "passport-e1", DocumentType.PASSPORT, when=datetime.now(UTC))
    )
    erasure = desk_request(ErasureRequested, subject, request_id, event_id="ev-erase-ev")
    pipeline.publish(erasure)
    audit = pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(erasure.event_id in e.event_ids_in for e in es),
        what="the erasure decided",
    )
    decided = [e.decision for e in audit if erasure.event_id in e.event_ids_in]
    assert "duplicate-request" not in decided
    deletes = wait_commands(
        pipeline,
        subject,
        "DELETE for the erasure",
        lambda cs: any(c.action is Action.DELETE for c in cs),
        systems=["crm"],
    )
    assert [c.request_id for c in deletes] == [request_id]
    wait_response(
        pipeline,
        request_id,
        "erasure completed",
        lambda rs: any(r.status is ResponseStatus.COMPLETED for r in rs),
    )


# -- N9: restriction --------------------------------------------------------------------


def test_restriction_restricts_holding_systems_allows_only_storage_actions_then_lifts(
    pipeline: Pipeline,
) -> None:
    subject, request_id = "cust-restrict", "req-restrict-1"
    now = datetime.now(UTC)
    records = [
        registered(subject, "crm-letter-1", "crm", DataCategory.CORRESPONDENCE, when=now),
        registered(
            subject,
            "inv-r1",
            "billing-db",
            DataCategory.BILLING,
            when=now,
            basis=LegalBasis.LEGAL_OBLIGATION,
            purpose="billing-accounting",
            source_system="billing",
        ),
    ]
    for event in records:
        pipeline.publish(event)
    wait_registered(pipeline, records)
    assert commands_for(pipeline, subject) == []

    pipeline.publish(
        desk_request(
            RestrictionRequested,
            subject,
            request_id,
            event_id="ev-restrict-1",
            reason="accuracy contested",
        )
    )
    restricts = wait_commands(
        pipeline,
        subject,
        "RESTRICT to the holding systems",
        lambda cs: (
            {c.target_system for c in cs if c.action is Action.RESTRICT} >= {"crm", "billing-db"}
        ),
    )
    assert sorted((c.target_system, c.record_ids) for c in restricts) == [
        ("billing-db", ["inv-r1"]),
        ("crm", ["crm-letter-1"]),
    ]
    assert all(c.request_id == request_id and c.rule_id == "N9.restriction" for c in restricts)
    responses = wait_response(
        pipeline,
        request_id,
        "restriction confirmed",
        lambda rs: any(r.status is ResponseStatus.COMPLETED for r in rs),
    )
    (confirmed,) = [r for r in responses if r.status is ResponseStatus.COMPLETED]
    assert "restricted" in confirmed.reasons[0]

    # While restricted, the rest of life goes on: a new record (restricted too), a
    # recording past its 30 days (retention still deletes it), a marketing opt-out.
    during: list[Event] = [
        registered(
            subject,
            "dw-r1",
            "data-warehouse",
            DataCategory.TRANSACTIONS,
            when=datetime.now(UTC),
            source_system="billing",
        ),
        call_recorded(
            subject,
            "rec-restrict-1",
            event_id="ev-rec-restrict",
            when=datetime.now(UTC) - timedelta(days=31),
        ),
        opted_out(subject, [Channel.EMAIL], event_id="ev-optout-restrict"),
    ]
    for change in during:
        pipeline.publish(change)
    wait_registered(pipeline, during)
    sent = wait_commands(
        pipeline,
        subject,
        "restriction extended, recording deleted, marketing suppressed",
        lambda cs: (
            {(c.action, c.target_system) for c in cs}
            >= {
                (Action.RESTRICT, "data-warehouse"),
                (Action.DELETE, "call-recorder"),
                (Action.SUPPRESS_MARKETING, "marketing-platform"),
            }
        ),
    )
    # Nothing but storage-related and subject-requested actions while restricted.
    assert {c.action for c in sent} <= ALLOWED_WHILE_RESTRICTED
    assert {c.action for c in sent} == {
        Action.RESTRICT,
        Action.DELETE,
        Action.SUPPRESS_MARKETING,
    }
    assert Action.LIFT_RESTRICTION not in {c.action for c in sent}
    audit = pipeline.models(pipeline.names.audit, AuditEvent)
    subject_ref = next(e.subject_ref for e in audit_for(pipeline, request_id))
    mine = [e for e in audit if e.subject_ref == subject_ref]
    decisions = [e.decision for e in mine]
    assert "restriction-extended" in decisions
    assert "deletion-while-restricted" in decisions
    assert "processing-while-restricted" not in decisions
    # The recording dates from before the request: reported late, it is restricted
    # under the request (N9, docs/event-time.md), and the answer will be amended.
    assert "late-record-restricted" in decisions

    pipeline.publish(desk_request(RestrictionLifted, subject, request_id, event_id="ev-lift-1"))
    (lifted,) = wait_audit(pipeline, request_id, "restriction-lifted")
    assert lifted.details["still-restricted"] == "false"
    after = wait_commands(
        pipeline,
        subject,
        "LIFT_RESTRICTION",
        lambda cs: any(c.action is Action.LIFT_RESTRICTION for c in cs),
    )
    lifts = [c for c in after if c.action is Action.LIFT_RESTRICTION]
    # Every restricted record still held is released, the one restricted later too.
    assert sorted((c.target_system, c.record_ids) for c in lifts) == [
        ("billing-db", ["inv-r1"]),
        ("crm", ["crm-letter-1"]),
        ("data-warehouse", ["dw-r1"]),
    ]
    assert all(c.request_id == request_id and c.rule_id == "N9.restriction-lifted" for c in lifts)
    # The lift sends no answer of its own (the subject was told before, Art. 18(3));
    # the only other answer is the amendment for the recording reported late.
    later = [
        r.status
        for r in responses_for(pipeline, request_id)
        if not r.reasons or "amends our earlier answer" not in r.reasons[0]
    ]
    assert later == [r.status for r in responses]


# -- N9/N1: objection to direct marketing -------------------------------------------------


def test_objection_to_direct_marketing_suppresses_every_marketing_system_at_once(
    pipeline: Pipeline,
) -> None:
    subject, request_id = "cust-object", "req-object-1"
    record = registered(
        subject,
        "mkt-1",
        "marketing-platform",
        DataCategory.MARKETING_PROFILE,
        when=datetime.now(UTC),
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        purpose="sales-marketing",
        source_system="marketing",
    )
    pipeline.publish(record)
    wait_registered(pipeline, [record])
    objection = desk_request(
        ObjectionReceived,
        subject,
        request_id,
        event_id="ev-object-1",
        kind=ObjectionKind.DIRECT_MARKETING,
    )
    pipeline.publish(objection)
    marketing = sorted(s.id for s in pipeline.policy.marketing_systems)
    assert marketing == sorted(["marketing-platform", EXTRA_MARKETING_SYSTEM])
    sent = wait_commands(
        pipeline,
        subject,
        "SUPPRESS_MARKETING to every marketing system",
        lambda cs: {c.target_system for c in cs} >= set(marketing),
    )
    assert sorted(c.target_system for c in sent) == marketing  # and nowhere else
    assert all(c.action is Action.SUPPRESS_MARKETING for c in sent)
    assert all(c.request_id == request_id for c in sent)
    assert all(c.rule_id == ids.N9_OBJECTION_MARKETING for c in sent)
    assert all(c.parameters == {"channels": "all"} for c in sent)
    # "At once": issued by the decision that took the objection, no identity asked.
    (suppressed,) = wait_audit(pipeline, request_id, "marketing-suppressed")
    assert suppressed.event_ids_in == [objection.event_id]
    assert sorted(suppressed.command_ids_out) == sorted(c.command_id for c in sent)

    responses = wait_response(
        pipeline,
        request_id,
        "completed once every system acknowledged",
        lambda rs: any(r.status is ResponseStatus.COMPLETED for r in rs),
    )
    assert all(r.status is not ResponseStatus.AWAITING_IDENTITY for r in responses)
    (done,) = [r for r in responses if r.status is ResponseStatus.COMPLETED]
    assert done.request_type is RequestType.OBJECTION
    acked = {
        a.command_id
        for a in pipeline.models(pipeline.names.acks, CommandAck)
        if a.outcome is AckOutcome.DONE
    }
    assert {c.command_id for c in sent} <= acked


# -- N13: deadlines ----------------------------------------------------------------


@pytest.fixture
def demo_pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    """A worker on the demo policy: rights requests are due 5 minutes after receipt."""
    yield from pipelines(kafka_bootstrap, tmp_path, policy_path=DEMO_POLICY)


def open_by_bucket(pipeline: Pipeline, request_type: str) -> dict[str, float]:
    return {
        bucket: pipeline.metric_sum(
            "lifecycle_requests_open", request_type=request_type, bucket=bucket
        )
        for bucket in ("overdue", "due_7d", "later")
    }


def test_request_past_its_due_date_is_audited_overdue_counted_and_left_open(
    demo_pipeline: Pipeline,
) -> None:
    pipeline = demo_pipeline
    assert pipeline.policy.requests.response_due.after(datetime(2024, 1, 1, tzinfo=UTC)) == (
        datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    )
    pipeline.start()
    # The CRM never answers: the erasure cannot complete.
    pipeline.run_downstream("crm", Behaviour(silent=True))
    subject, request_id = "cust-late", "req-erase-late"
    now = datetime.now(UTC)
    record = registered(subject, "letter-1", "crm", DataCategory.CORRESPONDENCE, when=now)
    pipeline.publish(record)
    wait_registered(pipeline, [record])
    # Received (event time) 5 minutes and 2 seconds ago: due 2 seconds ago.
    received = now - timedelta(minutes=5, seconds=2)
    pipeline.publish(
        desk_request(ErasureRequested, subject, request_id, event_id="ev-erase-late", when=received)
    )
    (overdue,) = wait_audit(pipeline, request_id, "request-overdue")
    assert overdue.rule_id == ids.N13_DEADLINE
    assert overdue.details["request-type"] == "erasure"
    # Due 5 minutes after receipt (event times travel at millisecond precision).
    due = datetime.fromisoformat(overdue.details["due-at"])
    assert abs(due - (received + timedelta(minutes=5))) < timedelta(milliseconds=1)
    wait_for(
        lambda: open_by_bucket(pipeline, "erasure")["overdue"] >= 1,
        60,
        'lifecycle_requests_open{request_type="erasure",bucket="overdue"} never counted it',
        alive=pipeline.process,
    )
    assert open_by_bucket(pipeline, "erasure") == {"overdue": 1, "due_7d": 0, "later": 0}

    # Overdue is not closed: the DELETE is still outstanding and no final answer went out.
    deletes = [c for c in commands_for(pipeline, subject, ["crm"]) if c.action is Action.DELETE]
    assert deletes
    assert all(c.request_id == request_id for c in deletes)
    final = {ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED}
    assert not [r for r in responses_for(pipeline, request_id) if r.status in final]
    assert not [e for e in audit_for(pipeline, request_id) if e.decision == "request-completed"]
