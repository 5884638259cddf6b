"""The agent body without Kafka: fake sender, dict tables, fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry
from tenacity import wait_none

import agents.handler as handler_module
from agents.audit_chain import ChainHead, link, verify_chain
from agents.clock import FakeClock
from agents.failures import RetryPolicy
from agents.handler import Handler, RawMessage, Sender
from agents.metrics import LifecycleMetrics
from agents.rules.context import AuditEntry
from agents.rules.policy import load_policy
from agents.rules.state import SubjectState
from agents.scheduler import Schedule, ScheduleEntry
from schemas.audit import AuditEvent, AuditSource
from schemas.commands import Action, Command
from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import CallRecorded
from schemas.internal import DueTick
from streams.codec import Codec, RegistryUnavailable
from streams.settings import REPO_ROOT
from streams.topics import TopicNames

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NAMES = TopicNames("t")
CODEC = Codec()


class Sent:
    """Records sends and counts broker confirmations."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, Any, int | None]] = []
        self.confirmed = 0

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        model = CODEC.decode(value, None, now=T0 + timedelta(days=400), check_key=False)
        self.records.append((topic, key, model, partition))

        async def delivered() -> None:
            self.confirmed += 1

        return delivered()

    def on(self, topic: str) -> list[Any]:
        return [m for t, _, m, _ in self.records if t == topic]


class FakeAudit:
    """Links entries as the audit writer does and hands them to the fake sender."""

    def __init__(self, send: Sender) -> None:
        self.send = send
        self.heads: dict[int, ChainHead] = {}

    async def append(
        self,
        partition: int,
        entries: Sequence[AuditEntry],
        *,
        source: AuditSource,
        decided_at: datetime,
    ) -> Awaitable[None]:
        head = self.heads.get(partition, ChainHead.genesis())
        pending = []
        for index, entry in enumerate(entries):
            event = link(
                head,
                entry,
                partition=partition,
                key=b"k",
                decided_at=decided_at,
                source=source,
                entry_index=index,
            )
            head = ChainHead.of(event)
            pending.append(await self.send(NAMES.audit, None, CODEC.encode(event), partition))
        self.heads[partition] = head

        async def committed() -> None:
            for delivery in pending:
                await delivery

        return committed()


class StateAfterConfirm(dict[bytes, bytes]):
    """A table that fails if state is written before every send is confirmed."""

    def __init__(self, sent: Sent) -> None:
        super().__init__()
        self.sent = sent

    def __setitem__(self, key: bytes, value: bytes) -> None:
        assert self.sent.confirmed == len(self.sent.records), "state written before confirm"
        super().__setitem__(key, value)


@pytest.fixture
def world() -> dict[str, Any]:
    clock = FakeClock(T0)
    sent = Sent()
    subjects = StateAfterConfirm(sent)
    schedule_table: dict[bytes, bytes] = {}
    schedule = Schedule()
    handler = Handler(
        codec=CODEC,
        policy=load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml"),
        clock=clock,
        names=NAMES,
        metrics=LifecycleMetrics.create(CollectorRegistry(), version="t", policy_version="t"),
        subjects=subjects,
        schedule_table=schedule_table,
        schedule=schedule,
        audit=FakeAudit(sent),
        send=sent,
    )
    return {
        "handler": handler,
        "clock": clock,
        "subjects": subjects,
        "schedule_table": schedule_table,
        "schedule": schedule,
        "sent": sent,
    }


def run(
    world: dict[str, Any], topic: str, key: bytes | None, value: bytes, offset: int = 0
) -> None:
    asyncio.run(world["handler"].handle(RawMessage(topic, 0, offset, key, value)))


def recording() -> CallRecorded:
    return CallRecorded(
        event_id="ev-1",
        subject_id="cust-1",
        source_system="telephony",
        event_time=T0,
        recording_id="rec-1",
        system="call-recorder",
    )


def test_event_is_stored_and_scheduled_not_deleted(world: dict[str, Any]) -> None:
    run(world, NAMES.input("telephony"), b"cust-1", CODEC.encode(recording()))
    state = SubjectState.model_validate_json(world["subjects"][b"cust-1"])
    assert "call-recorder/rec-1" in state.records
    entry = ScheduleEntry.from_bytes(world["schedule_table"][b"cust-1"])
    assert entry.due_ms == int((T0 + timedelta(days=30)).timestamp() * 1000)
    assert world["sent"].on(NAMES.command("call-recorder")) == []
    audit = world["sent"].on(NAMES.audit)
    assert [a.decision for a in audit] == ["retention-scheduled"]
    # The audit event names the input it was decided on, so a replay is recognisable.
    assert audit[0].source == (NAMES.input("telephony"), 0, 0)


def test_tick_at_due_sends_delete_and_chains_audit(world: dict[str, Any]) -> None:
    run(world, NAMES.input("telephony"), b"cust-1", CODEC.encode(recording()))
    due = T0 + timedelta(days=30)
    world["clock"].set(due - timedelta(milliseconds=1))
    tick = DueTick(subject_id="cust-1", due_at=due, sent_at=world["clock"].now())
    run(world, NAMES.ticks, b"cust-1", CODEC.encode(tick), offset=1)
    assert world["sent"].on(NAMES.command("call-recorder")) == []

    world["clock"].set(due)
    run(world, NAMES.ticks, b"cust-1", CODEC.encode(tick), offset=2)
    commands = world["sent"].on(NAMES.command("call-recorder"))
    assert len(commands) == 1
    command: Command = commands[0]
    assert command.action is Action.DELETE
    assert command.record_ids == ["rec-1"]
    audit: list[AuditEvent] = world["sent"].on(NAMES.audit)
    assert verify_chain(list(enumerate(audit)), b"k", ChainHead.genesis()) is None
    assert all(p == 0 for t, _, _, p in world["sent"].records if t == NAMES.audit)
    assert world["sent"].confirmed == len(world["sent"].records)


def test_garbage_is_dead_lettered_and_state_untouched(world: dict[str, Any]) -> None:
    run(world, NAMES.input("crm"), b"cust-9", b"\x00\x01\x02")
    dead = world["sent"].on(NAMES.dead_letter)
    assert len(dead) == 1
    letter: DeadLetter = dead[0]
    assert letter.original_value == b"\x00\x01\x02"
    assert letter.topic == NAMES.input("crm")
    assert world["subjects"] == {}


def test_a_message_the_rules_reject_is_dead_lettered_not_fatal(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: object) -> None:
        raise ValueError("cust-1 secret detail")

    monkeypatch.setattr(handler_module, "decide", explode)
    run(world, NAMES.input("telephony"), b"cust-1", CODEC.encode(recording()))
    dead = world["sent"].on(NAMES.dead_letter)
    assert len(dead) == 1
    assert dead[0].reason_class is ReasonClass.INVALID_MODEL
    assert "secret" not in dead[0].reason
    assert world["subjects"] == {}


def test_ack_topic_only_accepts_acks(world: dict[str, Any]) -> None:
    run(world, NAMES.acks, b"cust-1", CODEC.encode(recording()))
    dead = world["sent"].on(NAMES.dead_letter)
    assert [d.reason_class for d in dead] == [ReasonClass.UNEXPECTED_TYPE]


def test_unreachable_registry_is_retried_not_dead_lettered(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler: Handler = world["handler"]
    handler.retry = RetryPolicy(wait=wait_none())
    real_decode = CODEC.decode
    failures = iter([RegistryUnavailable("down"), RegistryUnavailable("still down")])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        for failure in failures:
            raise failure
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(CODEC, "decode", flaky)
    run(world, NAMES.input("telephony"), b"cust-1", CODEC.encode(recording()))
    assert world["sent"].on(NAMES.dead_letter) == []
    assert b"cust-1" in world["subjects"]


class Stopped(Exception):
    pass


def test_failed_delivery_stops_before_state_is_written(world: dict[str, Any]) -> None:
    handler: Handler = world["handler"]

    async def failing(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        async def never() -> None:
            raise OSError("broker gone")

        return never()

    def stop(exc: Exception) -> NoReturn:
        raise Stopped from exc

    handler.send = failing
    handler.audit = FakeAudit(failing)
    handler.on_delivery_failure = stop
    with pytest.raises(Stopped):
        run(world, NAMES.input("telephony"), b"cust-1", CODEC.encode(recording()))
    # Nothing written: the replayed event will be decided again from scratch.
    assert world["subjects"] == {}
    assert world["schedule_table"] == {}


def test_batch_chains_decisions_per_subject_and_writes_once_in_its_event(
    world: dict[str, Any],
) -> None:
    handler: Handler = world["handler"]
    first = recording()
    second = first.model_copy(update={"event_id": "ev-2", "recording_id": "rec-2"})
    other = first.model_copy(update={"event_id": "ev-3", "subject_id": "cust-2"})
    topic = NAMES.input("telephony")
    entered: list[str] = []

    @contextmanager
    def in_event(token: str) -> Iterator[None]:
        entered.append(token)
        yield

    items = [
        (RawMessage(topic, 0, 0, b"cust-1", CODEC.encode(first)), "t0"),
        (RawMessage(topic, 0, 1, b"cust-1", CODEC.encode(second)), "t1"),
        (RawMessage(topic, 1, 0, b"cust-2", CODEC.encode(other)), "t2"),
    ]
    asyncio.run(handler.handle_batch(items, in_event))
    state = SubjectState.model_validate_json(world["subjects"][b"cust-1"])
    # The second event was decided on top of the first within the batch.
    assert set(state.records) == {"call-recorder/rec-1", "call-recorder/rec-2"}
    # One write per subject, in the context of its latest event.
    assert entered == ["t1", "t2"]
    assert world["sent"].confirmed == len(world["sent"].records)
