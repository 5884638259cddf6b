"""A worker killed before its first commit loses nothing (issue 9, item 1).

Requests wait in the privacy desk's topic; worker A starts, decides the first
few and is killed (SIGKILL) before it has ever committed an offset. Worker B,
a second process with its own empty local state, takes the partitions over: it
restores A's state from the changelogs and must then decide every request A
left, answer every one, and never commit an offset past a request it has not
decided. (Before the fix, records delivered while B finished its restore were
dropped when Faust cleared the stream queues; with nothing committed no seek
brought them back, and B's next commit moved past them. The race needs the
restore, hence the wait for A's state before the kill.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.audit import AuditEvent
from schemas.events import AccessRequested, ErasureRequested, Event
from schemas.responses import RequestResponse
from tests.integration.events import desk_request
from tests.integration.pipeline import Pipeline, pipelines, wait_for

PARTITIONS = 6
REQUESTS = 1500
# Worker A is killed once it has stored this many state records, so that worker B
# has a restore to run before it reads the requests A left.
STATE_BEFORE_KILL = 100
# Worker A must not commit before it is killed, whatever the machine's speed.
NEVER_COMMITS = {"LIFECYCLE_COMMIT_INTERVAL_S": "3600"}


@pytest.fixture
def worker_a(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    workdir = tmp_path / "a"
    workdir.mkdir()
    yield from pipelines(
        kafka_bootstrap, workdir, partitions=PARTITIONS, extra_env=dict(NEVER_COMMITS)
    )


@pytest.fixture
def worker_b(worker_a: Pipeline, tmp_path: Path) -> Iterator[Pipeline]:
    """Another worker process of the same group, with its own (empty) local state."""
    workdir = tmp_path / "b"
    workdir.mkdir()
    yield from pipelines(worker_a.bootstrap, workdir, partitions=PARTITIONS, prefix=worker_a.prefix)


@pytest.fixture
def audit(worker_a: Pipeline) -> Iterator[Tail]:
    tail = Tail(worker_a, worker_a.names.audit)
    try:
        yield tail
    finally:
        tail.close()


@pytest.fixture
def responses(worker_a: Pipeline) -> Iterator[Tail]:
    tail = Tail(worker_a, worker_a.names.responses)
    try:
        yield tail
    finally:
        tail.close()


def requests(n: int) -> list[Event]:
    kinds: list[type[Event]] = [AccessRequested, ErasureRequested]
    return [
        desk_request(kinds[i % 2], f"cust-fo-{i}", f"req-fo-{i}", event_id=f"ev-fo-{i}")
        for i in range(n)
    ]


def offsets(pipeline: Pipeline, topic: str) -> tuple[list[int | None], list[int]]:
    """The consumer group's committed offset (None: nothing committed) and the end offset
    of each partition of ``topic``."""
    consumer = Consumer(
        {
            **pipeline.client_config,
            "group.id": pipeline.settings.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = [tp.offset if tp.offset >= 0 else None for tp in consumer.committed(tps, 10)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    finally:
        consumer.close()
    return committed, ends


def state_records(pipeline: Pipeline) -> int:
    """Records in the worker's table changelogs (Faust names them ``<app id>-*-changelog``):
    state a worker taking over must first restore."""
    consumer = Consumer({**pipeline.client_config, "group.id": "reader"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        return sum(
            consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for name, meta in topics.items()
            if name.startswith(f"{pipeline.settings.app_id}-") and name.endswith("-changelog")
            for p in meta.partitions
        )
    finally:
        consumer.close()


class Tail:
    """Everything written to one of the pipeline's topics so far, decoded.

    One consumer follows the topic for the whole test, so each look costs only
    what was appended since the last.
    """

    def __init__(self, pipeline: Pipeline, topic: str) -> None:
        self.pipeline = pipeline
        self.topic = topic
        self.models: list[Any] = []
        self.read_to = [0] * PARTITIONS
        self.consumer = Consumer(
            {**pipeline.client_config, "group.id": "reader", "enable.auto.commit": False}
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )

    def now(self) -> list[Any]:
        _, ends = offsets(self.pipeline, self.topic)
        while any(read < end for read, end in zip(self.read_to, ends, strict=True)):
            for msg in self.consumer.consume(500, timeout=1.0):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                self.read_to[partition] = offset + 1
                self.models.append(
                    self.pipeline.codec.decode(
                        msg.value(), msg.key(), now=datetime.now(UTC), check_key=False
                    )
                )
        return self.models

    def close(self) -> None:
        self.consumer.close()


def decided(audit: Tail) -> set[str]:
    """Ids of the input events some audit entry names: the events decided so far."""
    return {e for a in audit.now() if isinstance(a, AuditEvent) for e in a.event_ids_in}


def all_decided_and_committed(
    pipeline: Pipeline, topic: str, at: dict[tuple[int, int], str], audit: Tail
) -> bool:
    """True once every event of ``topic`` is decided and committed; fails at once when
    a committed offset has passed an event not decided."""
    # Committed offsets first: whatever lies below them was decided (its audit
    # entry written) before the commit, so before the audit is read.
    committed, ends = offsets(pipeline, topic)
    done = decided(audit)
    for p, upto in enumerate(committed):
        undecided = [off for off in range(upto or 0) if at[(p, off)] not in done]
        assert not undecided, f"partition {p} committed past undecided offsets {undecided}"
    return committed == ends and set(at.values()) <= done


def publish(pipeline: Pipeline, topic: str, events: list[Event]) -> dict[tuple[int, int], str]:
    """Publish ``events``; returns the event id at each (partition, offset)."""
    at: dict[tuple[int, int], str] = {}

    def delivered(event_id: str) -> Callable[[Any, Any], None]:
        def record(err: Any, msg: Any) -> None:
            assert err is None, err
            at[(msg.partition(), msg.offset())] = event_id

        return record

    for event in events:
        pipeline.producer.produce(
            topic,
            key=event.subject_id.encode(),
            value=pipeline.codec.encode(event),
            on_delivery=delivered(event.event_id),
        )
    assert pipeline.producer.flush(60) == 0
    return at


def test_worker_killed_before_its_first_commit_loses_no_request(
    worker_a: Pipeline, worker_b: Pipeline, audit: Tail, responses: Tail
) -> None:
    topic = worker_a.names.input("privacy-desk")
    at = publish(worker_a, topic, requests(REQUESTS))
    assert len(at) == REQUESTS

    worker_a.start()
    wait_for(
        lambda: state_records(worker_a) >= STATE_BEFORE_KILL,
        60,
        "worker A stored too little state",
        alive=worker_a.process,
        interval=0.05,
    )
    worker_a.kill()
    committed, _ = offsets(worker_a, topic)
    assert committed == [None] * PARTITIONS, "worker A committed before it was killed"
    left = set(at.values()) - decided(audit)
    assert left, "worker A decided every request before it was killed"

    worker_b.start()
    wait_for(
        lambda: all_decided_and_committed(worker_b, topic, at, audit),
        45,
        f"worker B left requests undecided ({len(left)} were left by A)",
        alive=worker_b.process,
    )
    answered = {r.request_id for r in responses.now() if isinstance(r, RequestResponse)}
    assert {f"req-fo-{i}" for i in range(REQUESTS)} <= answered
