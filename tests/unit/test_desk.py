"""Privacy-desk views on subject snapshots and responses (no broker needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agents import desk
from agents.desk_cli import desk_group
from agents.rules.snapshot import SubjectSnapshot
from agents.rules.testing import Harness
from schemas.base import DataCategory, DocumentType, LegalBasis
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import (
    AccessRequested,
    ComplaintReceived,
    ErasureRequested,
    RequestRefused,
)
from schemas.responses import RequestResponse, ResponseStatus
from tests.unit.builders import NOTICE, identity_evidence, register

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def _subject(subject_id: str, *, erasure: bool = True, access: bool = False) -> Harness:
    h = Harness(NOTICE, T0, subject_id=subject_id)
    register(
        h,
        "form-1",
        "crm",
        DataCategory.FORMS_SURVEYS,
        "sales-enquiries",
        basis=LegalBasis.LEGITIMATE_INTERESTS,
    )
    if erasure:
        h.send(h.event(ErasureRequested, request_id=f"{subject_id}-erase"))
    if access:
        h.send(h.event(AccessRequested, request_id=f"{subject_id}-access"))
    return h


def _state(h: Harness) -> SubjectSnapshot:
    assert h.state is not None
    return h.state


@pytest.mark.parametrize(
    ("now", "overdue_only", "expected"),
    [
        (T0, False, ["c-1", "a-erase", "b-erase", "b-access"]),
        (T0 + timedelta(days=32), False, ["c-1", "a-erase", "b-erase", "b-access"]),
        (T0 + timedelta(days=32), True, ["c-1", "a-erase", "b-erase"]),
        (T0 + timedelta(days=20), True, []),
    ],
)
def test_open_requests_by_due_date(now: datetime, overdue_only: bool, expected: list[str]) -> None:
    a = _subject("a")
    b = _subject("b", access=True)
    c = _subject("c", erasure=False)
    c.send(c.event(ComplaintReceived, complaint_id="c-1", summary="late"))  # due 3 Apr
    rows = desk.open_requests([_state(b), _state(a), _state(c)], now, overdue_only=overdue_only)
    assert [r.request_id for r in rows] == expected


def test_open_requests_skip_closed_and_placeholders() -> None:
    h = _subject("a")
    h.send(h.event(RequestRefused, request_id="a-erase", reason="unfounded"))
    identity_evidence(h, "e1", DocumentType.PASSPORT, req="later")
    assert desk.open_requests([_state(h)], T0) == []


@pytest.mark.parametrize(
    ("now", "bucket"),
    [(T0, "later"), (T0 + timedelta(days=28), "due_7d"), (T0 + timedelta(days=40), "overdue")],
)
def test_format_requests_shows_bucket_and_awaiting_identity(now: datetime, bucket: str) -> None:
    h = _subject("a", access=True)
    text = desk.format_requests(desk.open_requests([_state(h)], now))
    erase_line, access_line = text.splitlines()[1:]
    assert erase_line.split()[:4] == ["2024-04-04", bucket, "a", "a-erase"]
    assert access_line.split()[:2] == ["awaiting-identity", "-"]


def test_describe_subject_lists_records_requests_and_commands() -> None:
    h = _subject("a", access=True)
    text = desk.describe_subject(_state(h), T0)
    assert "crm/form-1  forms_surveys" in text
    assert "open requests: 2" in text
    assert "awaiting identity (clock not started)" in text
    assert "missing=one photographic ID" in text
    assert "outstanding commands: 1" in text
    assert "delete -> crm" in text


def _log(h: Harness) -> list[tuple[bytes | None, bytes | None]]:
    """The subject's writes in order, as its changelog holds them."""
    return [w for step in h.decisions for w in step.writes]


def test_latest_states_replays_the_changelog_to_each_subjects_state() -> None:
    a = _subject("a", access=True)
    b = _subject("b")
    log_a, log_b = _log(a), _log(b)
    # Two subjects' entries interleave in a partition; a keyless record is skipped.
    log = [w for pair in zip(log_a, log_b, strict=False) for w in pair]
    log += log_a[len(log_b) :] + log_b[len(log_a) :] + [(None, b"stray")]
    assert desk.latest_states(log, NOTICE, T0) == {"a": _state(a), "b": _state(b)}


def test_latest_states_forgets_entries_deleted_later_in_the_log() -> None:
    h = _subject("a", erasure=False)
    log = _log(h)
    tombstones: list[tuple[bytes | None, bytes | None]] = [(k, None) for k, _ in log]
    assert desk.latest_states(log + tombstones, NOTICE, T0) == {}
    assert desk.latest_states(log + tombstones + log, NOTICE, T0) == {"a": _state(h)}


def _responses(h: Harness) -> list[RequestResponse]:
    return [r for d in h.decisions for r in d.responses]


def _verified_access(h: Harness, request_id: str) -> None:
    h.send(h.event(AccessRequested, request_id=request_id))
    for evidence_id, kind in (("p", DocumentType.PASSPORT), ("b", DocumentType.BIRTH_CERTIFICATE)):
        identity_evidence(h, evidence_id, kind, req=request_id)
    for command in list(h.decisions[-1].commands):
        h.ack(command)


@pytest.mark.parametrize(
    ("scenario", "kind", "needle"),
    [
        ("access", "html", "<html"),
        ("refused", "text", "Manifestly unfounded"),
        ("partial", "text", "refused in part"),
    ],
)
def test_render_latest_response(scenario: str, kind: str, needle: str) -> None:
    h = _subject("a", erasure=False)
    if scenario == "access":
        _verified_access(h, "r-1")
    elif scenario == "refused":
        h.send(h.event(ErasureRequested, request_id="r-1"))
        h.send(h.event(RequestRefused, request_id="r-1", reason="Manifestly unfounded"))
    else:
        # An erasure answered in part (no body: the letter is built from the reasons).
        h.send(h.event(ErasureRequested, request_id="r-1"))
        done = h.ack(h.decisions[-1].commands[0]).responses[-1]
        kept = {
            "record_id": "inv-1",
            "system": "billing-db",
            "category": "billing",
            "reason": "Kept for seven years (legal obligation)",
        }
        partial = RequestResponse.model_validate(
            {
                **done.model_dump(),
                "status": ResponseStatus.PARTIALLY_REFUSED,
                "kept": [kept],
                "issued_at": done.issued_at + timedelta(seconds=1),
            }
        )
        h.decisions[-1].responses.append(partial)
    response = desk.latest_response(_responses(h), "r-1")
    assert response is not None
    got_kind, text = desk.render_response(response)
    assert got_kind == kind
    assert needle in text


def test_render_refuses_an_answer_not_ready() -> None:
    h = _subject("a", erasure=False)
    h.send(h.event(AccessRequested, request_id="r-1"))
    response = desk.latest_response(_responses(h), "r-1")
    assert response is not None
    with pytest.raises(ValueError, match="awaiting_identity"):
        desk.render_response(response)


def test_access_report_body_round_trips_to_html_with_controller() -> None:
    h = _subject("a", erasure=False)
    _verified_access(h, "r-1")
    response = desk.latest_response(_responses(h), "r-1")
    assert response is not None
    assert json.loads(response.body_json or "{}")["request_id"] == "r-1"
    kind, html = desk.render_response(response)
    assert kind == "html"
    assert "SmartComms Limited" in html


def test_changelog_topic_and_cli_commands() -> None:
    assert desk.changelog_topic("data-lifecycle") == "data-lifecycle-subjects-changelog"
    assert sorted(desk_group.commands) == ["parked", "render", "requests", "subject"]


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


def test_format_parked_lists_parked_items_oldest_first_without_payload() -> None:
    letters = [
        _letter(9, 30, FailureClass.RECORD_TOO_LARGE),
        _letter(4, 10, FailureClass.UNKNOWN_TOPIC),
        _letter(5, 20, None),  # undecodable input: not parked, a dead letter
    ]
    lines = desk.format_parked(letters).splitlines()
    assert lines[0].split() == ["FAILED", "AT", "CLASS", "SOURCE", "SUBJECT", "REASON"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["2026-03-01T09:10:00+00:00", "unknown_topic", "t.in.privacy-desk/1@4", "cust-7"],
        ["2026-03-01T09:30:00+00:00", "record_too_large", "t.in.privacy-desk/1@9", "cust-7"],
    ]
    every = desk.format_parked(letters, include_undecodable=True)
    assert "undecodable:truncated" in every
    assert "secret payload" not in every
    assert desk.format_parked(letters[2:]) == "nothing parked\n"
