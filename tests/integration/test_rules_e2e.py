"""Each rule end to end on the real broker: published event -> command on the right
system's topic -> downstream acknowledgement -> audit event (N1, N6, N9/N10).

One worker serves the whole module (starting one costs seconds); every test uses
its own subjects. The policy is notice.yaml plus a second marketing system, so
"every marketing system" means more than one topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.rules.policy import RuleKind
from schemas.audit import AuditEvent
from schemas.base import Channel, DataCategory, DataSource, LegalBasis
from schemas.commands import AckOutcome, Action, Command, CommandAck
from schemas.events import (
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    LegalHoldPlaced,
)
from schemas.responses import RequestResponse, ResponseStatus
from tests.integration.events import desk_request, opted_out, registered
from tests.integration.pipeline import (
    EXTRA_MARKETING_SYSTEM,
    NOTICE_POLICY,
    Pipeline,
    answering_pipelines,
    subject_commands,
    wait_decided,
    wait_for,
    wait_subject_commands,
    with_second_marketing_system,
)


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("rules-e2e")
    policy = with_second_marketing_system(NOTICE_POLICY, workdir)
    yield from answering_pipelines(kafka_bootstrap, workdir, policy_path=policy)


# -- helpers ------------------------------------------------------------------


def audit_with(pipeline: Pipeline, **fields: Any) -> list[AuditEvent]:
    return [
        e
        for e in pipeline.models(pipeline.names.audit, AuditEvent)
        if all(getattr(e, k) == v for k, v in fields.items())
    ]


def wait_audit(pipeline: Pipeline, what: str, condition: Any, timeout: float = 60) -> None:
    pipeline.wait_for_models(
        pipeline.names.audit, AuditEvent, condition, timeout=timeout, what=what
    )


def completed_ids(events: list[AuditEvent]) -> set[str]:
    return {
        cid
        for e in events
        if e.decision == "command-completed" and e.details.get("outcome") == AckOutcome.DONE
        for cid in e.command_ids_out
    }


def acked_done(pipeline: Pipeline) -> set[str]:
    return {
        a.command_id
        for a in pipeline.models(pipeline.names.acks, CommandAck)
        if a.outcome is AckOutcome.DONE
    }


# -- N6 -----------------------------------------------------------------------


def test_n6_contract_end_deletes_unneeded_data_now_and_legal_obligation_data_after_7_years(
    pipeline: Pipeline,
) -> None:
    subject = "cust-n6"
    legal = pipeline.policy.rule_for("smartcomms", RuleKind.LEGAL_OBLIGATION)
    assert legal is not None
    assert legal.id == "N6.legal-obligation"
    # The contract ended 7 calendar years ago less a few seconds: the legal-obligation
    # records fall due a few seconds from now.
    due = datetime.now(UTC) + timedelta(seconds=8)
    ended = legal.keep_for.before(due)
    started = ended - timedelta(days=400)
    contract = "k-n6"
    pipeline.publish(
        ContractStarted(
            event_id="ev-n6-start",
            subject_id=subject,
            source_system="billing",
            event_time=started,
            contract_id=contract,
        )
    )
    wait_audit(
        pipeline,
        "contract started",
        lambda es: any(
            e.decision == "contract-started" and "ev-n6-start" in e.event_ids_in for e in es
        ),
    )
    records = [
        registered(
            subject,
            "inv-n6",
            "billing-db",
            DataCategory.BILLING,
            when=started + timedelta(days=30),
            basis=LegalBasis.LEGAL_OBLIGATION,
            purpose="billing-accounting",
            contract_id=contract,
            source_system="billing",
        ),
        registered(
            subject,
            "txn-n6",
            "billing-db",
            DataCategory.TRANSACTIONS,
            when=started + timedelta(days=31),
            basis=LegalBasis.LEGAL_OBLIGATION,
            purpose="billing-accounting",
            contract_id=contract,
            source_system="billing",
        ),
        registered(
            subject,
            "mail-n6",
            "crm",
            DataCategory.CORRESPONDENCE,
            when=started + timedelta(days=32),
            contract_id=contract,
        ),
    ]
    for record in records:
        pipeline.publish(record)
    wait_audit(
        pipeline,
        "all three records registered",
        lambda es: (
            {r.event_id for r in records}
            <= {i for e in es if e.decision == "retention-scheduled" for i in e.event_ids_in}
        ),
    )
    # During the contract nothing is due.
    assert subject_commands(pipeline, "billing-db", subject) == []
    assert subject_commands(pipeline, "crm", subject) == []

    pipeline.publish(
        ContractEnded(
            event_id="ev-n6-end",
            subject_id=subject,
            source_system="billing",
            event_time=ended,
            contract_id=contract,
        )
    )

    # At contract end: correspondence (not a legal obligation) is deleted at once.
    crm = pipeline.wait_for_models(
        pipeline.names.command("crm"),
        Command,
        lambda cs: any(c.subject_id == subject and c.action is Action.DELETE for c in cs),
        what="DELETE of the correspondence at contract end",
    )
    (crm_delete,) = [c for c in crm if c.subject_id == subject]
    assert crm_delete.rule_id == "N6.contract-end"
    assert crm_delete.record_ids == ["mail-n6"]
    assert crm_delete.categories == [DataCategory.CORRESPONDENCE]

    # At end + 7 years: the billing records, in one command, never before they are due.
    billing = pipeline.wait_for_models(
        pipeline.names.command("billing-db"),
        Command,
        lambda cs: any(c.subject_id == subject and c.action is Action.DELETE for c in cs),
        what="DELETE of the legal-obligation records at contract end + 7 years",
    )
    billing_deletes = [c for c in billing if c.subject_id == subject]
    assert {c.command_id for c in billing_deletes} == {billing_deletes[0].command_id}
    billing_delete = billing_deletes[0]
    assert billing_delete.rule_id == "N6.legal-obligation"
    assert billing_delete.record_ids == ["inv-n6", "txn-n6"]
    assert billing_delete.issued_at >= due - timedelta(milliseconds=1)
    assert crm_delete.issued_at < due

    # No other system was told anything about this subject.
    for system in pipeline.policy.systems:
        if system.id not in ("crm", "billing-db"):
            assert subject_commands(pipeline, system.id, subject) == []

    # Both acknowledged by the downstream stores, and the audit trail closes both.
    ids = {crm_delete.command_id, billing_delete.command_id}
    wait_for(lambda: ids <= acked_done(pipeline), 60, "both DELETEs acknowledged DONE")
    wait_audit(pipeline, "both DELETEs completed", lambda es: ids <= completed_ids(es))
    deletes = audit_with(pipeline, decision="retention-delete")
    assert any(
        e.rule_id == "N6.contract-end" and crm_delete.command_id in e.command_ids_out
        for e in deletes
    )
    assert any(
        e.rule_id == "N6.legal-obligation" and billing_delete.command_id in e.command_ids_out
        for e in deletes
    )


# -- N1 -----------------------------------------------------------------------


def test_n1_opt_out_suppresses_every_marketing_system_and_a_list_import_never_re_adds(
    pipeline: Pipeline,
) -> None:
    subject = "cust-n1"
    marketing = sorted(s.id for s in pipeline.policy.marketing_systems)
    assert marketing == ["marketing-platform", EXTRA_MARKETING_SYSTEM]
    opt_out = opted_out(subject, [Channel.EMAIL], event_id="ev-n1-optout")
    pipeline.publish(opt_out)

    first: dict[str, Command] = {}
    for system in marketing:
        (command,) = wait_subject_commands(pipeline, system, subject, f"suppression on {system}")
        assert command.action is Action.SUPPRESS_MARKETING
        assert command.rule_id == "N1.opt-out"
        assert command.request_id == opt_out.event_id
        assert command.parameters == {"channels": "email"}
        first[system] = command
    # One decision, all systems: a single audit entry names every command.
    wait_audit(
        pipeline,
        "opt-out audited",
        lambda es: any(opt_out.event_id in e.event_ids_in for e in es),
    )
    (suppressed,) = [
        e
        for e in audit_with(pipeline, decision="marketing-suppressed")
        if opt_out.event_id in e.event_ids_in
    ]
    assert suppressed.rule_id == "N1.opt-out"
    assert set(suppressed.command_ids_out) == {c.command_id for c in first.values()}
    wait_audit(
        pipeline,
        "opt-out suppressions acknowledged",
        lambda es: {c.command_id for c in first.values()} <= completed_ids(es),
    )

    # A list import later brings the person back onto the marketing platform.
    imported = registered(
        subject,
        "list-row-n1",
        "marketing-platform",
        DataCategory.PURCHASED_LIST,
        when=datetime.now(UTC),
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        purpose="sales-marketing",
        source=DataSource.LIST_BROKER,
        source_system="marketing",
    )
    pipeline.publish(imported)
    wait_audit(
        pipeline,
        "re-add suppressed",
        lambda es: any(
            e.decision == "re-add-suppressed" and imported.event_id in e.event_ids_in for e in es
        ),
    )
    (re_add,) = [
        e
        for e in audit_with(pipeline, decision="re-add-suppressed")
        if imported.event_id in e.event_ids_in
    ]
    assert re_add.rule_id == "N1.re-add-suppressed"
    assert re_add.details["record-id"] == "list-row-n1"
    again: dict[str, Command] = {}
    for system in marketing:
        wait_for(
            lambda s=system: any(
                c.rule_id == "N1.re-add-suppressed" for c in subject_commands(pipeline, s, subject)
            ),
            60,
            f"re-add suppression on {system}",
        )
        cmds = [
            c
            for c in subject_commands(pipeline, system, subject)
            if c.rule_id == "N1.re-add-suppressed"
        ]
        assert len({c.command_id for c in cmds}) == 1, system
        again[system] = cmds[0]
        assert again[system].action is Action.SUPPRESS_MARKETING
        assert again[system].record_ids == ["list-row-n1"]
        assert again[system].parameters == {"channels": "email"}
        assert again[system].command_id != first[system].command_id
    assert set(re_add.command_ids_out) == {c.command_id for c in again.values()}
    wait_audit(
        pipeline,
        "re-add suppressions acknowledged",
        lambda es: {c.command_id for c in again.values()} <= completed_ids(es),
    )


# -- N9 erasure with N10 reasons --------------------------------------------------


def test_erasure_deletes_what_it_may_and_says_why_the_rest_is_kept(pipeline: Pipeline) -> None:
    subject = "cust-erase"
    now = datetime.now(UTC)
    contract = "k-erase"
    pipeline.publish(
        ContractStarted(
            event_id="ev-er-start",
            subject_id=subject,
            source_system="billing",
            event_time=now - timedelta(days=100),
            contract_id=contract,
        )
    )
    wait_audit(
        pipeline,
        "contract started",
        lambda es: any("ev-er-start" in e.event_ids_in for e in es),
    )
    records = [
        registered(
            subject,
            "inv-er",
            "billing-db",
            DataCategory.BILLING,
            when=now - timedelta(days=50),
            basis=LegalBasis.LEGAL_OBLIGATION,
            purpose="billing-accounting",
            contract_id=contract,
            source_system="billing",
        ),
        registered(
            subject, "mail-er", "crm", DataCategory.CORRESPONDENCE, when=now - timedelta(days=40)
        ),
        registered(
            subject,
            "profile-er",
            "marketing-platform",
            DataCategory.MARKETING_PROFILE,
            when=now - timedelta(days=30),
            basis=LegalBasis.LEGITIMATE_INTERESTS,
            purpose="sales-marketing",
            source_system="marketing",
        ),
        registered(
            subject,
            "visit-er",
            "web-analytics",
            DataCategory.WEBSITE_VISITS,
            when=now - timedelta(days=20),
            basis=LegalBasis.CONSENT,
            purpose="website-analytics",
            source=DataSource.OBSERVED,
            source_system="web-analytics",
        ),
    ]
    for record in records:
        pipeline.publish(record)
    hold = LegalHoldPlaced(
        event_id="ev-er-hold",
        subject_id=subject,
        source_system="privacy-desk",
        event_time=now - timedelta(days=1),
        hold_id="hold-er",
        reason="disputed usage",
        case_reference="CASE-ER-1",
        record_ids=["visit-er"],
    )
    pipeline.publish(hold)
    wait_decided(pipeline, [*records, hold], "records registered and hold placed")

    request = desk_request(ErasureRequested, subject, "req-erase-1", event_id="ev-er-request")
    pipeline.publish(request)

    responses = pipeline.wait_for_models(
        pipeline.names.responses,
        RequestResponse,
        lambda rs: any(
            r.request_id == request.request_id and r.status is ResponseStatus.PARTIALLY_REFUSED
            for r in rs
        ),
        what="final erasure response",
    )
    mine = [r for r in responses if r.request_id == request.request_id]
    assert [r.status for r in mine] == [
        ResponseStatus.IN_PROGRESS,
        ResponseStatus.PARTIALLY_REFUSED,
    ]
    final = mine[-1]
    kept = {k.record_id: k for k in final.kept}
    assert set(kept) == {"inv-er", "visit-er"}
    assert kept["inv-er"].system == "billing-db"
    assert kept["inv-er"].reason.startswith("N6.legal-obligation")
    assert kept["visit-er"].system == "web-analytics"
    assert "hold-er" in kept["visit-er"].reason
    assert "CASE-ER-1" in kept["visit-er"].reason
    assert final.reasons, "a partial refusal says why (N10)"
    assert any("Information Commissioner" in r for r in final.reasons)

    # DELETE only for what may go, each to its own system, under the request.
    deletes: dict[str, Command] = {}
    for system in ("crm", "marketing-platform"):
        (command,) = subject_commands(pipeline, system, subject)
        assert command.action is Action.DELETE
        assert command.rule_id == "N9.erasure"
        assert command.request_id == request.request_id
        deletes[system] = command
    assert deletes["crm"].record_ids == ["mail-er"]
    assert deletes["marketing-platform"].record_ids == ["profile-er"]
    for system in ("billing-db", "web-analytics"):
        assert subject_commands(pipeline, system, subject) == []
    # The final answer came only after every DELETE was acknowledged.
    done = {a.command_id: a for a in pipeline.models(pipeline.names.acks, CommandAck)}
    assert all(done[c.command_id].outcome is AckOutcome.DONE for c in deletes.values())
    assert all(final.issued_at >= done[c.command_id].acked_at for c in deletes.values())
    (decided,) = [
        e
        for e in audit_with(pipeline, decision="erasure-decided", rule_id="N9.erasure")
        if request.event_id in e.event_ids_in
    ]
    assert decided.details["records-kept"] == "inv-er,visit-er"
    assert decided.details["records-erased"] == "mail-er,profile-er"
    assert set(decided.command_ids_out) == {c.command_id for c in deletes.values()}
