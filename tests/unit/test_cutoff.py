"""N9 event time: an erasure, restriction or objection to profiling covers the
subject's data as of its receipt; its answer waits for the sources' watermarks (or
the policy's maximum wait) and records reported late are dealt with under it, with
an amended answer. Runs on the shipped policy (five sources, 15 minutes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.rules import cutoff
from agents.rules.durations import Duration
from agents.rules.testing import Harness, Step
from agents.runtime.scheduler import Waker
from agents.store import keys
from schemas.base import DataCategory, DataSource, LegalBasis, ObjectionKind
from schemas.commands import Action, Command
from schemas.events import (
    CallRecorded,
    ContractStarted,
    ErasureRequested,
    ObjectionReceived,
    RecordRegistered,
    RestrictionRequested,
    SourceWatermark,
)
from schemas.responses import ResponseStatus
from tests.unit.builders import NOTICE_AS_SHIPPED

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
SOURCES = list(NOTICE_AS_SHIPPED.event_time.sources)
MAX_WAIT = NOTICE_AS_SHIPPED.event_time.max_wait.as_timedelta()


def _h() -> Harness:
    return Harness(NOTICE_AS_SHIPPED, T0)


def _beat(h: Harness, source: str, at: datetime) -> None:
    """``source``'s heartbeat reaching the harness's partition."""
    beat = SourceWatermark(
        event_id=f"wm-{source}-{at.timestamp()}", source_system=source, watermark=at
    )
    h.store.apply(h.partition, cutoff.on_heartbeat(h.entries, beat, h.clock.now(), h.policy))


def _visit(h: Harness, record_id: str, at: datetime, **kw: Any) -> Step:
    """web-analytics reports a website visit recorded at ``at``."""
    fields: dict[str, Any] = {
        "record_id": record_id,
        "system": "web-analytics",
        "category": DataCategory.WEBSITE_VISITS,
        "source": DataSource.OBSERVED,
        "legal_basis": LegalBasis.LEGITIMATE_INTERESTS,
        "purpose": "fraud-prevention",
        "source_system": "web-analytics",
        "event_time": at,
        **kw,
    }
    return h.send(h.event(RecordRegistered, **fields))


def _ack_all(h: Harness, commands: list[Command]) -> Step:
    steps = [h.ack(c) for c in commands]
    return Step(
        commands=[c for s in steps for c in s.commands],
        audit=[a for s in steps for a in s.audit],
        responses=[r for s in steps for r in s.responses],
        writes=[],
        state=h.state,
    )


def _settled(step: Step) -> dict[str, str]:
    [entry] = [a for a in step.audit if a.decision == "cutoff-settled"]
    return entry.details


# (sources seen past the receipt before it, after it, minutes later the tick comes,
#  answered at that tick, waited, lagging)
WAITS = [
    (SOURCES, [], 0, True, "caught-up", []),
    ([], SOURCES, 1, True, "caught-up", []),
    ([], [], 14, False, None, None),
    ([], [], 15, True, "max-wait", SOURCES),
    (SOURCES[:2], SOURCES[2:4], 15, True, "max-wait", SOURCES[4:]),
]


@pytest.mark.parametrize(("before", "after", "minutes", "answered", "waited", "lagging"), WAITS)
def test_the_answer_waits_for_every_source_or_the_maximum_wait(
    before: list[str],
    after: list[str],
    minutes: int,
    answered: bool,
    waited: str | None,
    lagging: list[str] | None,
) -> None:
    h = _h()
    for source in before:
        _beat(h, source, T0 + timedelta(seconds=1))
    h.clock.advance(timedelta(seconds=2))
    receipt = h.clock.now()
    for source in before:
        _beat(h, source, receipt)
    first = h.send(h.event(ErasureRequested, request_id="r-1"))
    for source in after:
        _beat(h, source, receipt + timedelta(seconds=1))
    h.clock.advance(timedelta(minutes=minutes))
    step = first if minutes == 0 else h.tick()
    if not answered:
        assert step.responses == []
        assert h.next_due() == receipt + MAX_WAIT  # the timer wakes it then at the latest
        return
    [response] = step.responses
    assert response.status is ResponseStatus.COMPLETED
    details = _settled(step)
    assert details["waited"] == waited
    assert details["lagging"] == (",".join(sorted(lagging)) if lagging else "-")
    if lagging:
        assert all(s in response.reasons[0] for s in lagging)
    else:
        assert response.reasons == []
    # The wait leaves nothing behind in the partition.
    assert list(h.entries.iterate(keys.WAITING + keys.SEP, keys.end_of(keys.WAITING))) == []


def test_a_sources_own_events_move_its_watermark_less_the_allowed_lateness() -> None:
    policy = NOTICE_AS_SHIPPED.model_copy(
        update={
            "event_time": NOTICE_AS_SHIPPED.event_time.model_copy(
                update={
                    "sources": ["telephony"],
                    "allowed_lateness": Duration.parse("PT1M"),
                }
            )
        }
    )
    h = Harness(policy, T0)
    h.clock.advance(timedelta(minutes=5))
    receipt = h.clock.now()
    assert h.send(h.event(ErasureRequested, request_id="r-1")).responses == []
    # Another subject's call 30 s after the receipt: within the allowed lateness.
    other = Harness(policy, T0, subject_id="cust-2", store=h.store)
    other.clock.set(receipt + timedelta(seconds=30))
    recorded = {"system": "call-recorder", "source_system": "telephony"}
    other.send(other.event(CallRecorded, recording_id="c-1", **recorded))
    h.clock.set(receipt + timedelta(seconds=30))
    assert h.tick().responses == []
    other.clock.set(receipt + timedelta(minutes=2))
    other.send(other.event(CallRecorded, recording_id="c-2", **recorded))
    h.clock.set(receipt + timedelta(minutes=2))
    [response] = h.tick().responses
    assert response.status is ResponseStatus.COMPLETED


def test_watermarks_never_go_back_and_never_pass_the_clock() -> None:
    h = _h()
    _beat(h, "crm", T0 + timedelta(days=1))  # a clock far ahead: only up to now
    assert cutoff.watermark(h.entries, "crm") == int(T0.timestamp() * 1000)
    _beat(h, "crm", T0 - timedelta(hours=1))  # older: ignored
    assert cutoff.watermark(h.entries, "crm") == int(T0.timestamp() * 1000)
    _beat(h, "privacy-desk", T0)  # not a source of the policy
    assert cutoff.watermark(h.entries, "privacy-desk") is None


def test_a_record_reported_while_the_answer_waits_is_erased_under_the_request() -> None:
    h = _h()
    receipt = T0
    d = h.send(h.event(ErasureRequested, request_id="r-1"))
    assert d.responses == []  # nothing held, but the sources have not been seen
    late = _visit(h, "visit-1", receipt - timedelta(milliseconds=3))
    [delete] = late.commands
    assert (delete.action, delete.request_id, delete.record_ids) == (
        Action.DELETE,
        "r-1",
        ["visit-1"],
    )
    assert [a.details["answered"] for a in late.audit if a.decision == "late-record-erased"] == [
        "false"
    ]
    assert [n for dec in late.decisions for n in dec.notes.late_records] == []  # not late yet
    for source in SOURCES:
        _beat(h, source, receipt)
    assert h.tick().responses == []  # caught up, but the DELETE is not confirmed
    [response] = h.ack(delete).responses
    assert response.status is ResponseStatus.COMPLETED
    assert h.state is None or h.state.records == {}


# (record, event time relative to the receipt, expected audit, command, amended status)
LATE = [
    ("visit", timedelta(minutes=-5), "late-record-erased", Action.DELETE, ResponseStatus.COMPLETED),
    ("visit", timedelta(0), "late-record-erased", Action.DELETE, ResponseStatus.COMPLETED),
    ("visit", timedelta(milliseconds=1), None, None, None),
    (
        "invoice",
        timedelta(minutes=-5),
        "late-record-kept",
        None,
        # nothing was erased for the request: everything it concerns is kept, and why
        ResponseStatus.REFUSED,
    ),
]


@pytest.mark.parametrize(("kind", "offset", "decision", "action", "amended"), LATE)
def test_a_record_reported_after_the_answer_is_dealt_with_and_the_answer_amended(
    kind: str,
    offset: timedelta,
    decision: str | None,
    action: Action | None,
    amended: ResponseStatus | None,
) -> None:
    h = _h()
    h.send(h.event(ContractStarted, contract_id="ct-1", event_time=T0 - timedelta(days=9)))
    h.clock.advance(timedelta(seconds=1))
    receipt = h.clock.now()
    h.send(h.event(ErasureRequested, request_id="r-1"))
    h.clock.advance(MAX_WAIT)
    [answer] = h.tick().responses  # nobody caught up: answered at the maximum wait
    assert answer.status is ResponseStatus.COMPLETED
    h.clock.advance(timedelta(hours=2))
    if kind == "visit":
        step = _visit(h, "visit-1", receipt + offset)
    else:
        step = h.send(
            h.event(
                RecordRegistered,
                record_id="inv-1",
                system="billing-db",
                category=DataCategory.BILLING,
                source=DataSource.SUBJECT,
                legal_basis=LegalBasis.LEGAL_OBLIGATION,
                purpose="billing-accounting",
                contract_id="ct-1",
                source_system="billing",
                event_time=receipt + offset,
            )
        )
    if decision is None:
        assert [a.decision for a in step.audit if a.decision.startswith("late-")] == []
        assert step.commands == []
        assert step.responses == []
        return
    [entry] = [a for a in step.audit if a.decision == decision]
    assert (entry.rule_id, entry.details["request-id"], entry.details["answered"]) == (
        "N9.erasure",
        "r-1",
        "true",
    )
    system = "web-analytics" if kind == "visit" else "billing-db"
    assert [n for d in step.decisions for n in d.notes.late_records] == [(system, "erasure")]
    if action is not None:
        [command] = step.commands
        assert (command.action, command.request_id) == (action, "r-1")
        assert step.responses == []  # amended once the deletion is confirmed
        step = h.ack(command)
    [response] = step.responses
    assert response.status is amended
    assert response.response_id != answer.response_id
    assert system in response.reasons[0]
    assert "amends our earlier answer" in response.reasons[0]
    if kind == "invoice":
        assert "N6.legal-obligation" in response.reasons[1]
        assert "Information Commissioner" in response.reasons[-1]
    assert [a.decision for a in step.audit if a.decision == "request-amended"] == [
        "request-amended"
    ]


def test_restriction_and_objection_cover_late_records_too() -> None:
    h = _h()
    h.send(
        h.event(
            RecordRegistered,
            record_id="seg-1",
            system="marketing-platform",
            category=DataCategory.MARKETING_PROFILE,
            source=DataSource.OBSERVED,
            legal_basis=LegalBasis.LEGITIMATE_INTERESTS,
            purpose="sales-marketing",
        )
    )
    h.clock.advance(timedelta(seconds=1))
    receipt = h.clock.now()
    restricted = h.send(
        h.event(RestrictionRequested, request_id="r-res", reason="accuracy contested")
    )
    objected = h.send(
        h.event(ObjectionReceived, request_id="r-obj", kind=ObjectionKind.AUTOMATED_PROCESSING)
    )
    _ack_all(h, restricted.commands + objected.commands)
    h.clock.advance(MAX_WAIT)
    answers = h.tick().responses
    assert sorted(r.request_id for r in answers) == ["r-obj", "r-res"]
    step = h.send(
        h.event(
            RecordRegistered,
            record_id="seg-2",
            system="marketing-platform",
            category=DataCategory.MARKETING_PROFILE,
            source=DataSource.OBSERVED,
            legal_basis=LegalBasis.LEGITIMATE_INTERESTS,
            purpose="sales-marketing",
            source_system="marketing",
            event_time=receipt - timedelta(seconds=10),
        )
    )
    assert sorted((c.request_id, c.action) for c in step.commands) == [
        ("r-obj", Action.STOP_PROCESSING),
        ("r-res", Action.RESTRICT),
    ]
    assert sorted(a.decision for a in step.audit if a.decision.startswith("late-")) == [
        "late-record-restricted",
        "late-record-stopped",
    ]
    amended = _ack_all(h, step.commands).responses
    assert sorted((r.request_id, r.status) for r in amended) == [
        ("r-obj", ResponseStatus.COMPLETED),
        ("r-res", ResponseStatus.COMPLETED),
    ]
    assert all("marketing-platform" in r.reasons[0] for r in amended)


def test_the_timer_ticks_a_waiting_subject_once_every_source_passed_its_receipt() -> None:
    h = _h()
    h.clock.advance(timedelta(seconds=5))
    receipt = h.clock.now()
    h.send(h.event(ErasureRequested, request_id="r-1"))
    waker = Waker()
    now_ms = int(receipt.timestamp() * 1000)
    for source in SOURCES[:-1]:
        _beat(h, source, receipt)
    assert waker.caught_up(h.entries, SOURCES, now_ms) == []
    _beat(h, SOURCES[-1], receipt - timedelta(milliseconds=1))
    assert waker.caught_up(h.entries, SOURCES, now_ms) == []
    _beat(h, SOURCES[-1], receipt)
    assert waker.caught_up(h.entries, SOURCES, now_ms) == ["cust-1"]
    [response] = h.tick().responses
    assert response.status is ResponseStatus.COMPLETED
    assert waker.caught_up(h.entries, SOURCES, now_ms + 60_000) == []


def test_watermark_state_is_one_entry_per_source_whatever_the_traffic() -> None:
    h = _h()
    for n in range(50):
        other = Harness(NOTICE_AS_SHIPPED, T0, subject_id=f"cust-{n}", store=h.store)
        other.clock.set(T0 + timedelta(seconds=n))
        other.send(
            other.event(
                CallRecorded,
                recording_id=f"c-{n}",
                system="call-recorder",
                source_system="telephony",
            )
        )
        _beat(h, "crm", T0 + timedelta(seconds=n))
    marks = list(h.entries.iterate(keys.WATERMARK + keys.SEP, keys.end_of(keys.WATERMARK)))
    assert [k for k, _ in marks] == [keys.watermark("crm"), keys.watermark("telephony")]
