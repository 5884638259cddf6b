"""The transactional audit writer on the real broker: fencing and crash replays.

Two writers for one partition (the same app id, as two workers have): the
newer one fences the older, whose append fails visibly and leaves the chain
intact. A batch replayed after a crash (the same inputs decided again, through
the real handler) is recognised by ``lifecycle audit verify``'s checker as a
replay, not as tampering.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from agents.audit.verify import VerifyResult, verify_partition
from agents.audit.writer import AuditFenced, AuditWriter, FencedOutput, KafkaAuditTopic
from agents.clock import FakeClock, SystemClock
from agents.rules.context import AuditEntry
from agents.rules.policy import load_policy
from agents.rules.snapshot import SubjectSnapshot
from agents.rules.state import RecordStatus
from agents.runtime.handler import Handler, RawMessage
from agents.runtime.kafka_errors import is_fenced
from agents.runtime.metrics import LifecycleMetrics
from agents.store.memory import MemoryStateStore
from schemas.audit import AuditEvent, AuditSource
from schemas.internal import DueTick
from streams.broker.admin import delete_topics
from streams.codec import Codec
from streams.settings import REPO_ROOT
from streams.topics import TopicNames
from tests.integration.conftest import TopicFactory
from tests.integration.events import call_recorded

KEY = b"integration-audit-key"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CODEC = Codec()


def kafka_topic(bootstrap: str, topic: str, app_id: str) -> KafkaAuditTopic:
    return KafkaAuditTopic(
        topic=topic,
        app_id=app_id,
        client_config={"bootstrap.servers": bootstrap},
        codec=CODEC,
        clock=SystemClock(),
    )


def writer(audit: KafkaAuditTopic) -> tuple[AuditWriter, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = LifecycleMetrics.create(registry, version="t", policy_version="t")
    return AuditWriter(key=KEY, metrics=metrics, open_log=audit.open), registry


def entry(n: int) -> AuditEntry:
    return AuditEntry(
        subject_id=f"cust-{n}",
        controller_id="smartcomms",
        rule_id="N7.call-recordings",
        policy_version="p1",
        decision="retention-scheduled",
        event_ids_in=[f"ev-{n}"],
        event_time=T0,
    )


async def write(w: AuditWriter, *offsets: int) -> None:
    commits = [
        await w.append(0, [entry(o)], source=AuditSource("in", 0, o), decided_at=T0)
        for o in offsets
    ]
    await asyncio.gather(*commits)


def verify(bootstrap: str, topic: str, partition: int = 0) -> VerifyResult:
    return verify_partition(
        {"bootstrap.servers": bootstrap}, topic, partition, CODEC, SystemClock(), KEY
    )


def read_committed(bootstrap: str) -> Consumer:
    """A consumer that sees what downstream readers see, and says where partitions end."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # the end shows sooner (see pipeline.read_raw)
        }
    )


def committed_events(bootstrap: str, topic: str) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    consumer = read_committed(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "the audit partition did not answer"
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                return events
            assert error is None, error
            event = CODEC.decode(msg.value(), None, now=T0, check_key=False)
            assert isinstance(event, AuditEvent)
            events.append(event)
    finally:
        consumer.close()


def errors(registry: CollectorRegistry, operation: str, outcome: str) -> float | None:
    return registry.get_sample_value(
        "lifecycle_audit_write_errors_total", {"operation": operation, "outcome": outcome}
    )


def test_an_older_writer_is_fenced_and_the_chain_stays_intact(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("audit", partitions=1)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    old, old_registry = writer(kafka_topic(kafka_bootstrap, topic, app_id))
    new, _ = writer(kafka_topic(kafka_bootstrap, topic, app_id))

    async def scenario() -> None:
        await write(old, 0, 1)
        # `old` is linked and ready to commit when `new` takes the partition over.
        pending = await old.append(0, [entry(2)], source=AuditSource("in", 0, 2), decided_at=T0)
        await write(new, 2, 3)
        with pytest.raises(AuditFenced):
            await pending
        with pytest.raises(AuditFenced):
            await write(old, 4)
        await old.close()
        await new.close()

    asyncio.run(scenario())
    assert errors(old_registry, "commit", "fenced") == 1
    events = committed_events(kafka_bootstrap, topic)
    assert [e.source_offset for e in events] == [0, 1, 2, 3]
    assert [e.sequence for e in events] == [0, 1, 2, 3]
    result = verify(kafka_bootstrap, topic)
    assert result.broken is None
    assert (result.checked, result.replayed, result.duplicates) == (4, 0, 0)


def test_a_transaction_open_when_its_writer_is_fenced_never_reaches_the_chain(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("audit", partitions=1)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    audit = kafka_topic(kafka_bootstrap, topic, app_id)
    first, _ = writer(audit)
    asyncio.run(write(first, 0))
    # A zombie writer in mid-transaction: its record is on the log, uncommitted.
    zombie = audit.open(0)
    zombie.fence()
    head = zombie.read_head()
    assert head.sequence == 0
    zombie.producer.begin_transaction()
    forged = committed_events(kafka_bootstrap, topic)[0].model_copy(update={"sequence": 1})
    zombie.producer.produce(topic, value=CODEC.encode(forged), partition=0)
    assert zombie.producer.flush(30) == 0
    successor, _ = writer(audit)
    asyncio.run(write(successor, 1))  # fences the zombie, aborting its transaction
    with pytest.raises(KafkaException) as refused:
        zombie.producer.commit_transaction(30)
    assert is_fenced(refused.value)
    with contextlib.suppress(KafkaException):  # a fenced producer reports it again on close
        zombie.close()
    # read_committed readers (the worker's head reader, the verifier) never see it.
    assert [e.source_offset for e in committed_events(kafka_bootstrap, topic)] == [0, 1]
    result = verify(kafka_bootstrap, topic)
    assert result.broken is None
    assert result.checked == 2


def committed_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every committed record of ``topic`` (all partitions), as a downstream reads it."""
    consumer = read_committed(bootstrap)
    values: list[bytes] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        ended: set[int] = set()
        while len(ended) < len(metadata.partitions):
            msg = consumer.poll(10)
            assert msg is not None, "the topic did not answer"
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                ended.add(int(msg.partition() or 0))
                continue
            assert error is None, error
            values.append(msg.value() or b"")
    finally:
        consumer.close()
    return sorted(values)


def test_a_fenced_writer_sends_no_output_for_the_partition(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("audit", partitions=1)
    commands = new_topic("commands", partitions=3)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    old, _ = writer(kafka_topic(kafka_bootstrap, topic, app_id))
    new, _ = writer(kafka_topic(kafka_bootstrap, topic, app_id))

    def command(n: int) -> FencedOutput:
        return FencedOutput(commands, f"cust-{n}".encode(), f"DELETE {n}".encode())

    async def scenario() -> None:
        first = await old.append(
            0, [entry(0)], source=AuditSource("in", 0, 0), decided_at=T0, outputs=[command(0)]
        )
        assert await first == []
        # `old` decided from stale state while paused; `new` was assigned the partition.
        stale = await old.append(
            0, [entry(1)], source=AuditSource("in", 0, 1), decided_at=T0, outputs=[command(1)]
        )
        await new.claim([0])
        with pytest.raises(AuditFenced):
            await stale
        fresh = await new.append(
            0, [entry(1)], source=AuditSource("in", 0, 1), decided_at=T0, outputs=[command(2)]
        )
        assert await fresh == []
        await old.close()
        await new.close()

    asyncio.run(scenario())
    assert committed_values(kafka_bootstrap, commands) == [b"DELETE 0", b"DELETE 2"]
    assert [e.source_offset for e in committed_events(kafka_bootstrap, topic)] == [0, 1]
    assert verify(kafka_bootstrap, topic).broken is None


def test_an_output_the_broker_refuses_is_returned_and_the_rest_committed(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("audit", partitions=1)
    small = new_topic("small", partitions=1, config={"max.message.bytes": "2048"})
    commands = new_topic("commands", partitions=1)
    audit, _ = writer(kafka_topic(kafka_bootstrap, topic, f"app-{uuid.uuid4().hex[:8]}"))
    too_large = FencedOutput(small, b"cust-1", b"x" * 8192, tag="too-large")
    fine = FencedOutput(commands, b"cust-1", b"DELETE 1", tag="fine")

    async def scenario() -> list[tuple[object, str]]:
        commit = await audit.append(
            0,
            [entry(0)],
            source=AuditSource("in", 0, 0),
            decided_at=T0,
            outputs=[too_large, fine],
        )
        refused = await commit
        await audit.close()
        return [(output.tag, failure_name(error)) for output, error in refused]

    assert asyncio.run(scenario()) == [("too-large", "MSG_SIZE_TOO_LARGE")]
    assert committed_values(kafka_bootstrap, commands) == [b"DELETE 1"]
    assert committed_values(kafka_bootstrap, small) == []
    assert [e.source_offset for e in committed_events(kafka_bootstrap, topic)] == [0]


def failure_name(error: Exception) -> str:
    assert isinstance(error, KafkaException)
    name: str = error.args[0].name()
    return name


class Outputs:
    """Commands and responses: accepted at once (only the audit path is real here)."""

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        async def delivered() -> None:
            return None

        return delivered()


def copied(store: MemoryStateStore) -> MemoryStateStore:
    copy = MemoryStateStore()
    for partition, entries in store.partitions.items():
        copy.apply(partition, list(entries.data.items()))
    return copy


def handler(audit: AuditWriter, store: MemoryStateStore) -> Handler:
    return Handler(
        codec=CODEC,
        policy=load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml"),
        clock=FakeClock(T0 + timedelta(hours=1)),
        names=TopicNames("t"),
        metrics=LifecycleMetrics.create(CollectorRegistry(), version="t", policy_version="t"),
        store=store,
        audit=audit,
        send=Outputs(),
    )


@pytest.mark.parametrize("state_was_stored", [False, True])
def test_a_batch_replayed_after_a_crash_is_recognised_by_the_verifier(
    kafka_bootstrap: str, new_topic: TopicFactory, state_was_stored: bool
) -> None:
    topic = new_topic("audit", partitions=1)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    source_topic = TopicNames("t").input("telephony")
    batch = [
        RawMessage(
            source_topic,
            0,
            offset,
            f"cust-{offset}".encode(),
            CODEC.encode(
                call_recorded(f"cust-{offset}", f"rec-{offset}", event_id=f"ev-{offset}", when=T0)
            ),
        )
        for offset in range(10)
    ]
    stored = MemoryStateStore()

    async def scenario() -> None:
        before, _ = writer(kafka_topic(kafka_bootstrap, topic, app_id))
        await handler(before, stored).handle_batch(batch[:6])
        # The worker crashes after deciding inputs 6-9 (audit committed), before
        # their offsets are committed; whether their state was stored varies.
        subjects = copied(stored)
        await handler(before, subjects).handle_batch(batch[6:])
        if state_was_stored:
            stored.partitions = subjects.partitions
        # The restarted worker (a new writer: it fences the old one) replays 6-9.
        after, _ = writer(kafka_topic(kafka_bootstrap, topic, app_id))
        await handler(after, stored).handle_batch(batch[6:])
        await after.close()

    asyncio.run(scenario())
    result = verify(kafka_bootstrap, topic)
    assert result.broken is None
    assert result.checked == 14
    if state_was_stored:
        # The replayed events were already in the state: decided as duplicates.
        assert (result.replayed, result.redecided) == (0, 4)
    else:
        assert (result.replayed, result.redecided) == (4, 0)


class ProducerOutputs:
    """A real, non-transactional producer for whatever the handler sends itself
    (ticks, dead letters), as the worker's Faust producer: an output sent this
    way, outside the partition's transaction, would reach readers fenced or not."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        reports: list[KafkaError | None] = []
        self.producer.produce(
            topic, key=key, value=value, on_delivery=lambda err, _msg: reports.append(err)
        )

        async def delivered() -> None:
            while not reports:
                self.producer.poll(0.05)
                await asyncio.sleep(0)
            if reports[0] is not None:
                raise KafkaException(reports[0])

        return delivered()


class Stopped(Exception):
    """Stands in for the worker's exit 75 (exit_for_replay)."""


def _stop(exc: Exception) -> NoReturn:
    raise Stopped from exc


def test_a_stale_worker_fenced_out_of_its_partition_sends_no_delete_and_stores_nothing(
    kafka_bootstrap: str, kafka_admin: AdminClient, new_topic: TopicFactory
) -> None:
    """What a worker paused past its session (SIGSTOP, GC) does when it resumes: it
    decides from its stale state, but the new owner has claimed the partition, so its
    DELETE never reaches the downstream system and its state is not written."""
    audit_topic = new_topic("audit", partitions=1)
    names = TopicNames(f"f{uuid.uuid4().hex[:10]}")
    commands = names.command("call-recorder")
    for future in kafka_admin.create_topics([NewTopic(commands, 1, 1)]).values():
        future.result(timeout=30)
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    clock = FakeClock(T0)
    store = MemoryStateStore()
    stale_audit, _ = writer(kafka_topic(kafka_bootstrap, audit_topic, app_id))
    stale = Handler(
        codec=CODEC,
        policy=load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml"),
        clock=clock,
        names=names,
        metrics=LifecycleMetrics.create(CollectorRegistry(), version="t", policy_version="t"),
        store=store,
        audit=stale_audit,
        send=ProducerOutputs(kafka_bootstrap),
        on_delivery_failure=_stop,
    )
    recorded = call_recorded("cust-1", "rec-1", event_id="ev-1", when=T0)
    tick_at = T0 + timedelta(days=31)
    tick = DueTick(subject_id="cust-1", due_at=tick_at, sent_at=tick_at)
    new_owner, _ = writer(kafka_topic(kafka_bootstrap, audit_topic, app_id))

    async def scenario() -> None:
        await stale.handle_batch(
            [RawMessage(names.input("telephony"), 0, 0, b"cust-1", CODEC.encode(recorded))]
        )
        # Paused past its session: the partition moved, and its new owner claimed it.
        await new_owner.claim([0])
        clock.set(tick_at)
        with pytest.raises(Stopped):
            await stale.handle_batch([RawMessage(names.ticks, 0, 0, b"cust-1", CODEC.encode(tick))])
        await stale_audit.close()
        await new_owner.close()

    try:
        asyncio.run(scenario())
        assert committed_values(kafka_bootstrap, commands) == []
        snapshot = SubjectSnapshot.read(store.entries(0), "cust-1")
        assert snapshot is not None
        [record] = snapshot.records.values()
        assert (record.status, record.command_id) == (RecordStatus.HELD, None)
        assert [e.source_topic for e in committed_events(kafka_bootstrap, audit_topic)] == [
            names.input("telephony")
        ]
    finally:
        delete_topics(kafka_admin, [commands])
