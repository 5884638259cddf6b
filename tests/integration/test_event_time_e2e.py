"""Issue 11 on a real broker: answers wait for the sources' watermarks (SourceWatermark
heartbeats from the publisher SDK) or the maximum wait, a record reported late is
erased under the request with an amended answer (N9), and consent binds (N4)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from schemas.audit import AuditEvent
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.commands import Action
from schemas.events import ConsentWithdrawn, ErasureRequested, RecordRegistered
from schemas.responses import RequestResponse, ResponseStatus
from streams.publisher import Publisher
from tests.integration.pipeline import (
    LIFECYCLE,
    NOTICE_POLICY,
    Pipeline,
    answering_pipelines,
    wait_decided,
    wait_subject_commands,
)

MAX_WAIT_S = 45
SOURCES = ["telephony", "billing", "crm", "marketing", "web-analytics"]
FINAL = {ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED}


def _policy(directory: Path) -> Path:
    """The notice policy with a maximum wait a test can sit out."""
    doc = yaml.safe_load(NOTICE_POLICY.read_text())
    doc["event_time"]["max_wait"] = f"PT{MAX_WAIT_S}S"
    assert doc["event_time"]["sources"] == SOURCES
    path = directory / "notice-short-wait.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("event-time-e2e")
    yield from answering_pipelines(
        kafka_bootstrap, workdir, policy_path=_policy(workdir), watermarks=True
    )


@pytest.fixture(scope="module")
def publisher(pipeline: Pipeline) -> Iterator[Publisher]:
    with Publisher(pipeline.bootstrap, pipeline.settings) as sdk:
        yield sdk


def _visit(subject: str, record_id: str, at: datetime, event_id: str) -> RecordRegistered:
    return RecordRegistered(
        event_id=event_id,
        subject_id=subject,
        source_system="web-analytics",
        event_time=at,
        record_id=record_id,
        system="web-analytics",
        category=DataCategory.WEBSITE_VISITS,
        source=DataSource.OBSERVED,
        legal_basis=LegalBasis.LEGITIMATE_INTERESTS,
        purpose="fraud-prevention",
    )


def _responses(pipeline: Pipeline, request_id: str) -> list[RequestResponse]:
    return [
        r
        for r in pipeline.models(pipeline.names.responses, RequestResponse)
        if r.request_id == request_id
    ]


def _final(pipeline: Pipeline, request_id: str, what: str) -> list[RequestResponse]:
    return pipeline.wait_for_models(
        pipeline.names.responses,
        RequestResponse,
        lambda rs: any(r.request_id == request_id and r.status in FINAL for r in rs),
        timeout=MAX_WAIT_S * 3,
        what=what,
    )


def _audit(pipeline: Pipeline, subject_decision: str, request_id: str) -> list[AuditEvent]:
    return [
        e
        for e in pipeline.models(pipeline.names.audit, AuditEvent)
        if e.decision == subject_decision and e.details.get("request-id") == request_id
    ]


def test_the_answer_waits_until_every_source_has_published_past_the_receipt(
    pipeline: Pipeline, publisher: Publisher
) -> None:
    subject, request_id = "cust-wm-1", "req-wm-1"
    now = datetime.now(UTC)
    visit = _visit(subject, "visit-wm-1", now - timedelta(hours=1), "ev-wm-visit-1")
    pipeline.publish(visit)
    erasure = ErasureRequested(
        event_id="ev-wm-erase-1",
        subject_id=subject,
        source_system="privacy-desk",
        event_time=now,
        request_id=request_id,
    )
    pipeline.publish(erasure)
    [delete] = wait_subject_commands(pipeline, "web-analytics", subject, "the erasure's DELETE")
    assert (delete.action, delete.request_id) == (Action.DELETE, request_id)
    # The work is not delayed, the answer is: no final answer while the sources
    # have not been seen past the receipt (the decision is audited with its outputs).
    wait_decided(pipeline, [erasure], "the erasure decided")
    assert not any(r.status in FINAL for r in _responses(pipeline, request_id))
    for source in SOURCES:
        deliveries = publisher.publish_watermark(source, now + timedelta(seconds=1))
        # One heartbeat in every partition of the source's own topic.
        assert sorted((d.topic, d.partition) for d in deliveries) == [
            (pipeline.names.input(source), p) for p in range(pipeline.partitions)
        ]
    final = [r for r in _final(pipeline, request_id, "the answer") if r.request_id == request_id]
    assert [r.status for r in final if r.status in FINAL] == [ResponseStatus.COMPLETED]
    settled = _audit(pipeline, "cutoff-settled", request_id)
    assert settled
    assert {e.details["waited"] for e in settled} == {"caught-up"}


def test_a_late_record_is_erased_under_the_answered_request_and_the_answer_amended(
    pipeline: Pipeline, publisher: Publisher
) -> None:
    subject, request_id = "cust-wm-2", "req-wm-2"
    receipt = datetime.now(UTC)
    pipeline.publish(
        ErasureRequested(
            event_id="ev-wm-erase-2",
            subject_id=subject,
            source_system="privacy-desk",
            event_time=receipt,
            request_id=request_id,
        )
    )
    # Every source but web-analytics says it has published past the receipt.
    for source in SOURCES[:-1]:
        publisher.publish_watermark(source, receipt + timedelta(seconds=1))
    responses = _final(pipeline, request_id, "the answer at the maximum wait")
    [answer] = [r for r in responses if r.request_id == request_id and r.status in FINAL]
    assert answer.status is ResponseStatus.COMPLETED
    assert any("web-analytics" in reason for reason in answer.reasons)
    settled = _audit(pipeline, "cutoff-settled", request_id)
    assert settled
    assert {(e.details["waited"], e.details["lagging"]) for e in settled} == {
        ("max-wait", "web-analytics")
    }
    # web-analytics now reports a visit recorded five minutes before the request.
    pipeline.publish(_visit(subject, "visit-wm-2", receipt - timedelta(minutes=5), "ev-wm-late"))
    [delete] = wait_subject_commands(pipeline, "web-analytics", subject, "the late DELETE")
    assert (delete.action, delete.request_id, delete.record_ids) == (
        Action.DELETE,
        request_id,
        ["visit-wm-2"],
    )
    amended = pipeline.wait_for_models(
        pipeline.names.responses,
        RequestResponse,
        lambda rs: sum(r.request_id == request_id and r.status in FINAL for r in rs) >= 2,
        what="the amended answer",
    )
    last = [r for r in amended if r.request_id == request_id and r.status in FINAL][-1]
    assert last.status is ResponseStatus.COMPLETED
    assert last.response_id != answer.response_id
    assert "amends our earlier answer" in last.reasons[0]
    late = _audit(pipeline, "late-record-erased", request_id)
    assert late
    assert {e.details["answered"] for e in late} == {"true"}
    assert _audit(pipeline, "request-amended", request_id)
    assert pipeline.metric_sum("lifecycle_late_records_total", system="web-analytics") >= 1


def test_a_record_on_withdrawn_consent_is_stopped_at_once(pipeline: Pipeline) -> None:
    subject = "cust-consent-1"
    now = datetime.now(UTC)
    pipeline.publish(
        ConsentWithdrawn(
            event_id="ev-cw-1",
            subject_id=subject,
            source_system="privacy-desk",
            event_time=now - timedelta(minutes=1),
            purpose="website-analytics",
        )
    )
    pipeline.publish(
        RecordRegistered(
            event_id="ev-cw-visit",
            subject_id=subject,
            source_system="web-analytics",
            event_time=now,
            record_id="visit-cw-1",
            system="web-analytics",
            category=DataCategory.WEB_BEHAVIOUR_STATS,
            source=DataSource.OBSERVED,
            legal_basis=LegalBasis.CONSENT,
            purpose="website-analytics",
        )
    )
    [stop] = wait_subject_commands(pipeline, "web-analytics", subject, "the stop")
    assert (stop.action, stop.rule_id, stop.record_ids) == (
        Action.STOP_PROCESSING,
        "N4.consent-binds",
        ["visit-cw-1"],
    )
    audit = pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(e.decision == "processing-without-consent" for e in es),
        what="the N4 audit entry",
    )
    entries = [e for e in audit if e.decision == "processing-without-consent"]
    assert {(e.rule_id, e.details["system"]) for e in entries} == {
        ("N4.consent-binds", "web-analytics")
    }
    assert (
        pipeline.metric_sum(
            "lifecycle_processing_without_consent_total",
            system="web-analytics",
            purpose="website-analytics",
        )
        == 1
    )


def test_lifecycle_publish_sends_a_heartbeat_to_every_partition(pipeline: Pipeline) -> None:
    beat = {"event_id": "wm-cli-1", "source_system": "crm", "watermark": "2026-01-01T00:00:00Z"}
    done = subprocess.run(
        [str(LIFECYCLE), "publish", "SourceWatermark", json.dumps(beat)],
        env=pipeline.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted((line["topic"], line["partition"]) for line in lines) == [
        (pipeline.names.input("crm"), p) for p in range(pipeline.partitions)
    ]
