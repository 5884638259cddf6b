"""Command delivery: stable ids, acks, retries with backoff, escalation, dedup, ordering."""

from datetime import UTC, datetime, timedelta

import pytest

from agents.rules import commands, decide
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.testing import Harness
from agents.store import keys
from agents.store.memory import MemoryPartition
from schemas.base import Channel
from schemas.commands import AckOutcome, Action, Command, CommandAck, command_id
from schemas.events import (
    CallRecorded,
    ErasureRequested,
    Event,
    MarketingOptOutReceived,
)
from schemas.internal import DueTick
from tests.unit.builders import NOTICE

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
DUE = T0 + timedelta(days=30)


def _due_delete(h: Harness) -> Command:
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.set(DUE)
    [cmd] = h.tick().commands
    return cmd


def test_command_id_is_stable_and_matches_schema_helper() -> None:
    a, b = Harness(NOTICE, T0), Harness(NOTICE, T0)
    assert (
        _due_delete(a).command_id
        == _due_delete(b).command_id
        == command_id(
            action=Action.DELETE,
            system="call-recorder",
            subject_id="cust-1",
            rule_id="N7.call-recordings",
            record_ids=["rec-1"],
            # The recording's generation: the id of the event that registered it.
            generations={"rec-1": "evt-1"},
        )
    )


def test_no_ack_by_deadline_resends_same_id_next_attempt() -> None:
    h = Harness(NOTICE, T0)
    cmd = _due_delete(h)
    assert h.next_due() == cmd.deadline
    h.clock.set(cmd.deadline - MS)
    assert h.tick().commands == []
    h.clock.set(cmd.deadline)
    d = h.tick()
    [again] = d.commands
    assert (again.command_id, again.attempt) == (cmd.command_id, 2)
    assert (again.issued_at, again.deadline) == (cmd.deadline, cmd.deadline + timedelta(hours=1))
    assert [a.decision for a in d.audit] == ["command-retried"]


@pytest.mark.parametrize(
    ("attempt", "wait"),
    [
        (1, timedelta(minutes=5)),
        (2, timedelta(minutes=10)),
        (3, timedelta(minutes=20)),
        (7, timedelta(minutes=320)),
        (8, timedelta(hours=6)),  # capped at retry_backoff_max
        (60, timedelta(hours=6)),
    ],
)
def test_backoff(attempt: int, wait: timedelta) -> None:
    ctx = Ctx.open(
        MemoryPartition(),
        subject_id="cust-1",
        policy=NOTICE,
        now=T0,
        event_time=T0,
        event_ids_in=[],
    )
    assert commands.backoff(ctx, attempt) == wait


def test_failed_acks_retry_with_backoff_then_escalate() -> None:
    h = Harness(NOTICE, T0)
    cmd = _due_delete(h)
    attempts = [cmd.attempt]
    for n in range(1, NOTICE.commands.escalate_after_attempts):
        h.clock.advance(timedelta(seconds=1))
        d = h.ack(cmd, AckOutcome.FAILED)
        assert [a.decision for a in d.audit] == ["command-failed"]
        wait = NOTICE.commands.retry_backoff_base.as_timedelta() * 2 ** (n - 1)
        assert h.next_due() == h.clock.now() + wait
        h.clock.advance(wait - MS)
        assert h.tick().commands == []  # not early
        h.clock.advance(MS)
        [cmd] = h.tick().commands
        attempts.append(cmd.attempt)
    assert attempts == [1, 2, 3, 4, 5]
    d = h.ack(cmd, AckOutcome.FAILED)
    assert [a.decision for a in d.audit] == ["command-failed", "command-escalated"]
    escalated = d.audit[1]
    assert (escalated.rule_id, escalated.details["attempts"]) == ("N7.call-recordings", "5")
    assert h.next_due() is None  # no more automatic retries
    h.clock.advance(timedelta(days=1))
    assert h.tick().commands == []
    # A late success still closes it.
    assert h.ack(cmd).state is None


def test_escalation_after_last_attempt_times_out() -> None:
    h = Harness(NOTICE, T0)
    cmd = _due_delete(h)
    sent = [cmd]
    while True:
        h.clock.set(sent[-1].deadline)
        d = h.tick()
        if not d.commands:
            break
        sent += d.commands
    assert [c.attempt for c in sent] == [1, 2, 3, 4, 5]
    assert [a.decision for a in d.audit] == ["command-escalated"]


def test_unknown_ack_is_audited_not_fatal() -> None:
    h = Harness(NOTICE, T0)
    ack = CommandAck(
        command_id="cmd-unknown",
        subject_id="cust-1",
        system="crm",
        outcome=AckOutcome.DONE,
        acked_at=T0,
    )
    d = h.send(ack)
    assert [a.decision for a in d.audit] == ["unknown-command-ack"]
    assert d.commands == []


def test_ack_before_command_closes_it_when_issued() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    cid = command_id(
        action=Action.DELETE,
        system="call-recorder",
        subject_id="cust-1",
        rule_id="N7.call-recordings",
        record_ids=["rec-1"],
        generations={"rec-1": "evt-1"},
    )
    h.send(
        CommandAck(
            command_id=cid,
            subject_id="cust-1",
            system="call-recorder",
            outcome=AckOutcome.DONE,
            acked_at=T0,
        )
    )
    h.clock.set(DUE)
    d = h.tick()
    assert d.commands == []  # already done downstream: not sent again
    assert [a.decision for a in d.audit] == ["command-completed", "retention-delete"]
    assert d.audit[0].details["early-ack"] == "true"
    assert d.state is None


def test_ack_from_wrong_system_does_not_close() -> None:
    h = Harness(NOTICE, T0)
    cmd = _due_delete(h)
    d = h.ack(cmd, system="crm")
    assert [a.decision for a in d.audit] == ["ack-system-mismatch"]
    assert d.state is not None
    assert cmd.command_id in d.state.commands


def test_redelivered_ack_after_close_is_ignored() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(MarketingOptOutReceived, channels=[Channel.EMAIL]))
    [cmd] = h.decisions[-1].commands
    h.ack(cmd)
    d = h.ack(cmd)
    assert (d.commands, d.audit, d.state) == ([], [], h.decisions[-2].state)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (CallRecorded, {"recording_id": "rec-1", "system": "call-recorder"}),
        (MarketingOptOutReceived, {"channels": [Channel.ALL]}),
        (ErasureRequested, {"request_id": "req-1"}),
    ],
)
def test_duplicate_event_produces_no_commands(kind: type, fields: dict[str, object]) -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-0", system="call-recorder"))
    event = h.event(kind, **fields)
    h.send(event)
    before = h.state
    d = h.send(event)
    assert d.commands == []
    assert d.responses == []
    assert [a.decision for a in d.audit] == ["duplicate-ignored"]
    assert d.state == before


def test_duplicate_within_the_dedup_window_is_ignored_and_memory_is_bounded() -> None:
    h = Harness(NOTICE, T0)
    window = NOTICE.state.dedup_window.as_timedelta()
    events = [
        h.event(CallRecorded, recording_id="rec-1", system="call-recorder", event_id=f"e-{n}")
        for n in range(510)
    ]
    for event in events:
        h.send(event)
    assert h.state is not None
    assert h.state.seen == 510  # no count limit: the window decides
    h.clock.advance(window - timedelta(hours=1))
    assert [a.decision for a in h.send(events[0]).audit] == ["duplicate-ignored"]
    # Past the window (and the bucket it fell in) the ids are forgotten.
    h.clock.advance(NOTICE.state.dedup_bucket + timedelta(hours=2))
    h.tick()
    assert h.state is not None
    assert h.state.seen == 0


def test_stored_values_round_trip_through_json() -> None:
    h = Harness(NOTICE, T0)
    _due_delete(h)
    h.send(h.event(MarketingOptOutReceived, channels=[Channel.SMS]))
    h.send(h.event(ErasureRequested, request_id="req-1"))
    before = h.state
    assert before is not None
    # Re-encode every stored value: what is read back is what was written.
    for key, raw in list(h.entries.iterate(b"", b"\xff")):
        h.entries.apply([(key, raw)])
    assert h.state == before
    assert h.next_due() is not None


def test_tick_for_unknown_subject_is_a_no_op() -> None:
    d = decide(MemoryPartition(), DueTick(subject_id="cust-9", due_at=T0, sent_at=T0), T0, NOTICE)
    assert (d.writes, d.commands, d.audit, d.responses) == ([], [], [], [])


def test_state_of_another_subject_is_refused() -> None:
    h = Harness(NOTICE, T0)
    _due_delete(h)
    # A header stored under the wrong subject's key is refused, not acted on.
    h.entries.apply([(keys.header("cust-2"), h.entries.get(keys.header("cust-1")))])
    tick = DueTick(subject_id="cust-2", due_at=T0, sent_at=T0)
    with pytest.raises(ValueError, match="cust-1"):
        decide(h.entries, tick, T0, NOTICE)


class _NoHandler(Event):
    """An event type no rule handles (every real one is handled)."""


def test_event_without_handler_is_audited() -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(_NoHandler))
    [audit] = d.audit
    assert (audit.decision, audit.details["event-type"]) == ("unhandled-event", "_NoHandler")


def test_registry_refuses_second_handler() -> None:
    with pytest.raises(ValueError, match="already handled"):
        handles(CallRecorded)(lambda ctx, event: None)


def test_n14_guard_refuses_recordings_to_marketing_system() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    ctx = Ctx.open(
        h.entries, subject_id="cust-1", policy=NOTICE, now=T0, event_time=T0, event_ids_in=[]
    )
    cid = commands.issue(
        ctx,
        action=Action.EXPORT,
        system="marketing-platform",
        controller_id="smartcomms",
        rule_id="test.export",
        record_keys=["call-recorder/rec-1"],
    )
    assert cid is None
    assert ctx.out_commands == []
    [audit] = ctx.out_audit
    assert (audit.rule_id, audit.decision) == (
        "N14.recordings-not-for-marketing",
        "command-refused",
    )


def test_nothing_fires_a_millisecond_before_next_due() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.send(h.event(ErasureRequested, request_id="req-1"))
    seen = 0
    while (due := h.next_due()) is not None and seen < 20:
        h.clock.set(due - MS)
        quiet = h.tick()
        assert (quiet.commands, quiet.audit, quiet.responses) == ([], [], [])
        h.clock.set(due)
        loud = h.tick()
        assert loud.commands or loud.audit or loud.responses or loud.writes
        seen += 1
    assert seen > 3
