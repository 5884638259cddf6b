"""Acknowledgements on the real broker: resend on silence, retry on failure, escalation.

The policy is demo.yaml with the command settings shortened further (ack deadline
3 s, backoff 1 s doubling to 2 s, escalation after 3 attempts), so a command runs
out of attempts in about ten seconds. One worker serves the module; the
marketing platform never answers and the CRM fails every DELETE.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from agents.tools.downstream import Behaviour
from schemas.audit import AuditEvent
from schemas.base import Channel, DataCategory, LegalBasis
from schemas.commands import AckOutcome, Action, CommandAck
from schemas.events import ErasureRequested
from schemas.responses import RequestResponse, ResponseStatus
from tests.integration.events import desk_request, opted_out, registered
from tests.integration.pipeline import (
    DEMO_POLICY,
    Pipeline,
    pipelines,
    subject_commands,
    wait_decided,
    wait_for,
    wait_subject_commands,
)

ACK_DEADLINE = timedelta(seconds=3)
BACKOFF_BASE = timedelta(seconds=1)
ATTEMPTS = 3


def short_command_policy(directory: Path) -> Path:
    doc = yaml.safe_load(DEMO_POLICY.read_text())
    doc["version"] = "acks-test"
    doc["commands"] = {
        "ack_deadline": "PT3S",
        "retry_backoff_base": "PT1S",
        "retry_backoff_max": "PT2S",
        "escalate_after_attempts": ATTEMPTS,
    }
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("acks-e2e")
    for p in pipelines(kafka_bootstrap, workdir, policy_path=short_command_policy(workdir)):
        assert p.policy.commands.ack_deadline.as_timedelta() == ACK_DEADLINE
        p.start()
        p.run_downstream("marketing-platform", Behaviour(silent=True))
        p.run_downstream("crm", Behaviour(fail_actions=frozenset({Action.DELETE})))
        yield p


def audit_for(pipeline: Pipeline, command_id: str) -> list[AuditEvent]:
    return [
        e
        for e in pipeline.models(pipeline.names.audit, AuditEvent)
        if command_id in e.command_ids_out
    ]


def wait_escalated(pipeline: Pipeline, command_id: str) -> list[AuditEvent]:
    found: list[AuditEvent] = []

    def escalated() -> bool:
        nonlocal found
        found = audit_for(pipeline, command_id)
        return any(e.decision == "command-escalated" for e in found)

    wait_for(escalated, 90, f"{command_id} escalated", alive=pipeline.process)
    return found


def test_unacknowledged_command_is_resent_under_the_same_id_then_escalated(
    pipeline: Pipeline,
) -> None:
    subject = "cust-silent"
    pipeline.publish(opted_out(subject, [Channel.ALL]))
    (command,) = wait_subject_commands(pipeline, "marketing-platform", subject, "first suppression")
    assert command.action is Action.SUPPRESS_MARKETING
    assert command.attempt == 1

    trail = wait_escalated(pipeline, command.command_id)
    decisions = [e.decision for e in trail]
    assert decisions.count("command-retried") == ATTEMPTS - 1
    assert decisions.index("command-escalated") > decisions.index("command-retried")
    (escalation,) = [e for e in trail if e.decision == "command-escalated"]
    assert escalation.rule_id == "N1.opt-out"
    assert escalation.details["system"] == "marketing-platform"
    assert escalation.details["attempts"] == str(ATTEMPTS)

    copies = subject_commands(pipeline, "marketing-platform", subject)
    # Every send is the same command, attempt counting up, each after the last's deadline.
    assert {c.command_id for c in copies} == {command.command_id}
    assert [c.attempt for c in copies] == list(range(1, ATTEMPTS + 1))
    for before, after in pairwise(copies):
        assert after.issued_at >= before.deadline - timedelta(milliseconds=1)
        assert after.deadline - after.issued_at == ACK_DEADLINE
        assert (after.record_ids, after.parameters) == (before.record_ids, before.parameters)
    # Nobody acknowledged anything for this subject.
    assert not [
        a for a in pipeline.models(pipeline.names.acks, CommandAck) if a.subject_id == subject
    ]
    assert pipeline.metric_sum("lifecycle_commands_resent_total", system="marketing-platform") >= (
        ATTEMPTS - 1
    )


def test_failed_acknowledgement_is_retried_after_backoff_then_the_request_fails(
    pipeline: Pipeline,
) -> None:
    subject = "cust-failing"
    record = registered(
        subject,
        "mail-fail",
        "crm",
        DataCategory.CORRESPONDENCE,
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        purpose="sales-enquiries",
        event_id=f"ev-reg-{subject}",
    )
    pipeline.publish(record)
    request = desk_request(ErasureRequested, subject, "req-fail-1", event_id=f"ev-erase-{subject}")
    wait_decided(pipeline, [record], "record registered")
    pipeline.publish(request)
    (command,) = wait_subject_commands(pipeline, "crm", subject, "erasure DELETE")
    assert command.action is Action.DELETE
    assert command.record_ids == ["mail-fail"]

    trail = wait_escalated(pipeline, command.command_id)
    failed = [e for e in trail if e.decision == "command-failed"]
    retried = [e for e in trail if e.decision == "command-retried"]
    assert [e.details["attempt"] for e in failed] == [str(a) for a in range(1, ATTEMPTS + 1)]
    assert [e.details["attempt"] for e in retried] == [str(a) for a in range(2, ATTEMPTS + 1)]
    # Each retry waits the backoff after the failure: base * 2**(attempt-1), capped at 2 s.
    for failure, retry in zip(failed, retried, strict=False):
        attempt = int(failure.details["attempt"])
        wait = min(BACKOFF_BASE * 2 ** (attempt - 1), timedelta(seconds=2))
        assert retry.decided_at >= failure.decided_at + wait - timedelta(milliseconds=1)

    copies = subject_commands(pipeline, "crm", subject)
    assert {c.command_id for c in copies} == {command.command_id}
    assert [c.attempt for c in copies] == list(range(1, ATTEMPTS + 1))
    acks = [a for a in pipeline.models(pipeline.names.acks, CommandAck) if a.subject_id == subject]
    assert len(acks) == ATTEMPTS
    assert {a.outcome for a in acks} == {AckOutcome.FAILED}
    assert all(a.reason for a in acks)

    # The request waiting on it is answered, visibly failed, not left open.
    responses = pipeline.wait_for_models(
        pipeline.names.responses,
        RequestResponse,
        lambda rs: any(
            r.request_id == request.request_id and r.status is ResponseStatus.FAILED for r in rs
        ),
        what="failed erasure response",
    )
    (final,) = [
        r
        for r in responses
        if r.request_id == request.request_id and r.status is ResponseStatus.FAILED
    ]
    assert final.reasons
    assert (
        pipeline.metric_sum("lifecycle_commands_failed_total", system="crm", action="delete")
        >= ATTEMPTS
    )


def test_escalation_is_counted_on_the_metrics_endpoint(pipeline: Pipeline) -> None:
    subject = "cust-escalation-metric"
    pipeline.publish(opted_out(subject, [Channel.ALL]))
    commands = wait_subject_commands(pipeline, "marketing-platform", subject, "suppression")
    (command,) = {c.command_id for c in commands}
    wait_escalated(pipeline, command)
    assert (
        pipeline.metric_sum(
            "lifecycle_commands_escalated_total",
            system="marketing-platform",
            action="suppress_marketing",
        )
        >= 1
    )


def test_requests_are_counted_on_the_metrics_endpoint(pipeline: Pipeline) -> None:
    subject = "cust-nothing-held"
    request = desk_request(
        ErasureRequested, subject, "req-nothing-held", event_id=f"ev-erase-{subject}"
    )
    pipeline.publish(request)
    responses = pipeline.wait_for_models(
        pipeline.names.responses,
        RequestResponse,
        lambda rs: any(r.request_id == request.request_id for r in rs),
        what="erasure answered",
    )
    (response,) = [r for r in responses if r.request_id == request.request_id]
    assert response.status is ResponseStatus.COMPLETED
    assert pipeline.metric_sum("lifecycle_requests_received_total", request_type="erasure") >= 1
    assert (
        pipeline.metric_sum(
            "lifecycle_requests_closed_total", request_type="erasure", outcome="completed"
        )
        >= 1
    )
