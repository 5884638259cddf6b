"""The desk's plain-text views and rendered answers, from the read model (no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.clock import FakeClock
from agents.rules.testing import Harness
from desk import answers, text
from desk.cli import desk_group
from desk.readmodel import queries
from desk.readmodel.store import Store
from schemas.base import DataCategory, DocumentType, LegalBasis
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import AccessRequested, ErasureRequested, RequestRefused
from tests.unit.builders import NOTICE, identity_evidence, register
from tests.unit.desk_topics import AUDIT_KEY, TOPICS, Recorder

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(
        f"sqlite:///{tmp_path / 'desk.sqlite'}",
        topics=TOPICS,
        audit_key=AUDIT_KEY,
        clock=FakeClock(T0),
    )
    yield s
    s.close()


def _subject(rec: Recorder, subject_id: str, *, erasure: bool = True) -> Harness:
    h = Harness(NOTICE, T0, subject_id=subject_id)
    rec.decision(
        h,
        register(
            h,
            "form-1",
            "crm",
            DataCategory.FORMS_SURVEYS,
            "sales-enquiries",
            basis=LegalBasis.LEGITIMATE_INTERESTS,
        ),
    )
    if erasure:
        rec.send(h, h.event(ErasureRequested, request_id=f"{subject_id}-erase"))
    return h


def _view(store: Store, subject_id: str, now: datetime = T0) -> queries.SubjectView:
    with store.engine.connect() as conn:
        return queries.subject_view(conn, subject_id, store.ref(subject_id), now)


@pytest.mark.parametrize(
    ("now", "bucket"),
    [(T0, "later"), (T0 + timedelta(days=28), "due_7d"), (T0 + timedelta(days=40), "overdue")],
)
def test_format_requests_shows_bucket_and_awaiting_identity(
    store: Store, now: datetime, bucket: str
) -> None:
    rec = Recorder()
    h = _subject(rec, "a")
    rec.send(h, h.event(AccessRequested, request_id="a-access"))
    store.apply(rec.take())
    with store.engine.connect() as conn:
        shown = text.format_requests(queries.requests_by_deadline(conn, now))
    header, erase_line, access_line = shown.splitlines()
    assert header.split()[:3] == ["DUE", "(UK)", "BUCKET"]
    assert erase_line.split()[:4] == ["2024-04-04", bucket, "a", "a-erase"]
    assert access_line.split()[:2] == ["awaiting-identity", "-"]


def test_describe_subject_lists_records_requests_and_commands(store: Store) -> None:
    rec = Recorder()
    h = _subject(rec, "a")
    rec.send(h, h.event(AccessRequested, request_id="a-access"))
    store.apply(rec.take())
    shown = text.describe_subject(_view(store, "a"))
    assert "subject a\n" in shown
    assert "crm/form-1  forms_surveys" in shown
    assert "open requests: 2" in shown
    assert "awaiting identity (clock not started)" in shown
    assert "missing=one photographic ID" in shown
    assert "outstanding commands: 1" in shown
    assert "delete -> crm" in shown


def _latest(store: Store, subject_id: str, request_id: str) -> object:
    with store.engine.connect() as conn:
        found = queries.responses(conn, subject_id, request_id)
    assert found
    return found[-1]


def test_render_an_access_report_as_html(store: Store) -> None:
    rec = Recorder()
    h = _subject(rec, "a", erasure=False)
    rec.send(h, h.event(AccessRequested, request_id="r-1"))
    for evidence_id, kind in (("p", DocumentType.PASSPORT), ("b", DocumentType.BIRTH_CERTIFICATE)):
        rec.decision(h, identity_evidence(h, evidence_id, kind, req="r-1"))
    for command in list(h.decisions[-1].commands):
        rec.decision(h, h.ack(command))
    store.apply(rec.take())
    answer = answers.render(_latest(store, "a", "r-1"))
    assert answer.kind == "html"
    assert "<html" in answer.text
    assert "SmartComms Limited" in answer.text


def test_render_a_refusal_letter(store: Store) -> None:
    rec = Recorder()
    h = _subject(rec, "a")
    rec.send(h, h.event(RequestRefused, request_id="a-erase", reason="Manifestly unfounded"))
    store.apply(rec.take())
    answer = answers.render(_latest(store, "a", "a-erase"))
    assert answer.kind == "text"
    assert "Manifestly unfounded" in answer.text
    assert "Information Commissioner" in answer.text


def test_render_refuses_an_answer_not_ready(store: Store) -> None:
    rec = Recorder()
    h = _subject(rec, "a", erasure=False)
    rec.send(h, h.event(AccessRequested, request_id="r-1"))
    store.apply(rec.take())
    with pytest.raises(answers.NothingToRender, match="awaiting_identity"):
        answers.render(_latest(store, "a", "r-1"))


def test_cli_commands() -> None:
    assert sorted(desk_group.commands) == [
        "hash-password",
        "parked",
        "project",
        "render",
        "requests",
        "serve",
        "subject",
    ]


def _letter(offset: int, minutes: int, failure: FailureClass | None) -> DeadLetter:
    return DeadLetter(
        topic="t.in.privacy-desk",
        partition=1,
        offset=offset,
        original_key=b"cust-7",
        original_value=b"secret payload",
        reason_class=ReasonClass.INVALID_MODEL if failure else ReasonClass.TRUNCATED,
        reason="output to t.cmd.gone not delivered: unknown_topic (KafkaException)"
        if failure
        else "cut short",
        failed_at=datetime(2026, 3, 1, 9, minutes, tzinfo=UTC),
        failure_class=failure,
    )


def test_parked_items_oldest_first_without_payload(store: Store) -> None:
    rec = Recorder()
    for letter in (
        _letter(9, 30, FailureClass.RECORD_TOO_LARGE),
        _letter(4, 10, FailureClass.UNKNOWN_TOPIC),
        _letter(5, 20, None),  # undecodable input: not parked, a dead letter
    ):
        rec.model(TOPICS.names.dead_letter, letter)
    store.apply(rec.take())
    with store.engine.connect() as conn:
        lines = text.format_parked(queries.parked(conn)).splitlines()
        every = text.format_parked(queries.parked(conn, include_undecodable=True))
    assert lines[0].split() == ["FAILED", "AT", "CLASS", "SOURCE", "SUBJECT", "REASON"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["2026-03-01T09:10:00+00:00", "unknown_topic", "t.in.privacy-desk/1@4", "cust-7"],
        ["2026-03-01T09:30:00+00:00", "record_too_large", "t.in.privacy-desk/1@9", "cust-7"],
    ]
    assert "undecodable:truncated" in every
    assert "secret payload" not in every
    assert text.format_parked([]) == "nothing parked\n"
