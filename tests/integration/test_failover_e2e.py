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
from pathlib import Path
from typing import Any

import pytest

from schemas.events import AccessRequested, ErasureRequested, Event
from schemas.responses import RequestResponse
from tests.integration.events import desk_request
from tests.integration.pipeline import Pipeline, pipelines, wait_for
from tests.integration.topic_tail import (
    Tail,
    changelog_records,
    committed_offsets,
    decided,
    end_offsets,
)

PARTITIONS = 6
# Enough that worker B still has hundreds to read when its restore completes.
REQUESTS = 600
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
    with Tail(worker_a, worker_a.names.audit) as tail:
        yield tail


@pytest.fixture
def responses(worker_a: Pipeline) -> Iterator[Tail]:
    with Tail(worker_a, worker_a.names.responses) as tail:
        yield tail


def requests(n: int) -> list[Event]:
    kinds: list[type[Event]] = [AccessRequested, ErasureRequested]
    return [
        desk_request(kinds[i % 2], f"cust-fo-{i}", f"req-fo-{i}", event_id=f"ev-fo-{i}")
        for i in range(n)
    ]


def all_decided_and_committed(
    pipeline: Pipeline, topic: str, at: dict[tuple[int, int], str], audit: Tail
) -> bool:
    """True once every event of ``topic`` is decided and committed; fails at once when
    a committed offset has passed an event not decided."""
    # Committed offsets first: whatever lies below them was decided (its audit
    # entry written) before the commit, so before the audit is read.
    committed = committed_offsets(pipeline, topic)
    ends = end_offsets(pipeline, topic)
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
        lambda: changelog_records(worker_a) >= STATE_BEFORE_KILL,
        60,
        "worker A stored too little state",
        alive=worker_a.process,
        interval=0.05,
    )
    worker_a.kill()
    assert committed_offsets(worker_a, topic) == [None] * PARTITIONS, (
        "worker A committed before it was killed"
    )
    left = set(at.values()) - decided(audit)
    assert left, "worker A decided every request before it was killed"

    worker_b.start()
    wait_for(
        lambda: all_decided_and_committed(worker_b, topic, at, audit),
        90,
        f"worker B left requests undecided ({len(left)} were left by A)",
        alive=worker_b.process,
    )
    answered = {r.request_id for r in responses.now() if isinstance(r, RequestResponse)}
    assert {f"req-fo-{i}" for i in range(REQUESTS)} <= answered
