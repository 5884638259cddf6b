"""The agent body without Kafka: fake sender, in-memory state store, fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry
from tenacity import wait_none

import agents.runtime.handler as handler_module
from agents.audit.chain import ChainHead, link, verify_chain
from agents.audit.writer import FencedOutput, Refused
from agents.clock import FakeClock
from agents.rules.context import AuditEntry
from agents.rules.decide import next_due
from agents.rules.policy import load_policy
from agents.rules.snapshot import SubjectSnapshot
from agents.runtime.failures import RetryPolicy
from agents.runtime.handler import Handler, RawMessage, Sender
from agents.runtime.metrics import LifecycleMetrics
from agents.runtime.scheduler import Waker
from agents.store import keys
from agents.store.layer import Write
from agents.store.memory import MemoryStateStore
from schemas.audit import AuditEvent, AuditSource
from schemas.commands import Action, Command
from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import CallRecorded, SourceWatermark
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
        outputs: Sequence[FencedOutput] = (),
    ) -> Awaitable[list[Refused]]:
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
        # The decision's outputs go in the same transaction, after its audit.
        for output in outputs:
            pending.append(await self.send(output.topic, output.key, output.value, None))
        self.heads[partition] = head

        async def committed() -> list[Refused]:
            for delivery in pending:
                await delivery
            return []

        return committed()


class StateAfterConfirm(MemoryStateStore):
    """A store that fails if state is persisted before every send is confirmed."""

    def __init__(self, sent: Sent) -> None:
        super().__init__()
        self.sent = sent
        self.persisted: list[list[tuple[int, list[Write]]]] = []

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        assert self.sent.confirmed == len(self.sent.records), "state written before confirm"
        self.persisted.append(groups)
        return await super().persist(groups)

    def snapshot(self, subject_id: str, partition: int = 0) -> SubjectSnapshot | None:
        return SubjectSnapshot.read(self.entries(partition), subject_id)

    @property
    def empty(self) -> bool:
        return all(len(p) == 0 for p in self.partitions.values())


@pytest.fixture
def world() -> dict[str, Any]:
    clock = FakeClock(T0)
    sent = Sent()
    store = StateAfterConfirm(sent)
    handler = Handler(
        codec=CODEC,
        policy=load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml"),
        clock=clock,
        names=NAMES,
        metrics=LifecycleMetrics.create(CollectorRegistry(), version="t", policy_version="t"),
        store=store,
        audit=FakeAudit(sent),
        send=sent,
    )
    return {
        "handler": handler,
        "clock": clock,
        "store": store,
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
    store: StateAfterConfirm = world["store"]
    state = store.snapshot("cust-1")
    assert state is not None
    assert "call-recorder/rec-1" in state.records
    assert next_due(store.entries(0), "cust-1") == T0 + timedelta(days=30)
    # The worker's timer finds the subject on disk when it is due, not before.
    due_ms = int((T0 + timedelta(days=30)).timestamp() * 1000)
    assert Waker().due(store.entries(0), int(T0.timestamp() * 1000)) == []
    assert [s for s, _ in Waker().due(store.entries(0), due_ms)] == ["cust-1"]
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
    assert world["store"].empty


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
    assert world["store"].empty


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
    assert world["store"].snapshot("cust-1") is not None


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
    assert world["store"].empty


def test_batch_chains_decisions_per_subject_and_writes_each_in_its_partition(
    world: dict[str, Any],
) -> None:
    handler: Handler = world["handler"]
    store: StateAfterConfirm = world["store"]
    first = recording()
    second = first.model_copy(update={"event_id": "ev-2", "recording_id": "rec-2"})
    other = first.model_copy(update={"event_id": "ev-3", "subject_id": "cust-2"})
    topic = NAMES.input("telephony")
    items = [
        RawMessage(topic, 0, 0, b"cust-1", CODEC.encode(first)),
        RawMessage(topic, 0, 1, b"cust-1", CODEC.encode(second)),
        RawMessage(topic, 1, 0, b"cust-2", CODEC.encode(other)),
    ]
    asyncio.run(handler.handle_batch(items))
    state = store.snapshot("cust-1")
    assert state is not None
    # The second event was decided on top of the first within the batch.
    assert set(state.records) == {"call-recorder/rec-1", "call-recorder/rec-2"}
    # One persist per batch; each subject's entries in its own partition, the
    # header after the records and the seen-event marks last.
    [persisted] = store.persisted
    # One group per subject, then each partition's own entries (the telephony
    # watermark, stored once per batch at its latest value).
    assert [partition for partition, _ in persisted] == [0, 1, 0, 1]
    assert {k[:1] for _, writes in persisted[2:] for k, _ in writes} == {keys.WATERMARK}
    assert store.snapshot("cust-2", partition=1) is not None
    assert store.snapshot("cust-2", partition=0) is None
    order = [k[:1] for k, _ in persisted[0][1]]
    assert order.index(keys.HEADER) > max(i for i, ns in enumerate(order) if ns == keys.RECORD)
    assert all(ns == keys.SEEN for ns in order[order.index(keys.HEADER) + 1 :])
    assert world["sent"].confirmed == len(world["sent"].records)


@pytest.mark.parametrize(
    ("topic_of", "stored"),
    [("web-analytics", True), ("telephony", False)],
)
def test_a_heartbeat_moves_its_partitions_watermark_only_on_its_own_topic(
    world: dict[str, Any], topic_of: str, stored: bool
) -> None:
    handler: Handler = world["handler"]
    store: StateAfterConfirm = world["store"]
    at = T0 - timedelta(minutes=1)
    beat = SourceWatermark(event_id="wm-1", source_system="web-analytics", watermark=at)
    raw = RawMessage(NAMES.input(topic_of), 1, 7, None, CODEC.encode(beat))
    asyncio.run(handler.handle_batch([raw]))
    mark = store.entries(1).get(keys.watermark("web-analytics"))
    if stored:
        assert mark is not None
        assert keys.from_be64(mark) == int(at.timestamp() * 1000)
        assert world["sent"].on(NAMES.dead_letter) == []
    else:
        assert mark is None
        [dead] = world["sent"].on(NAMES.dead_letter)
        assert "must come on" in dead.reason
