"""The audit chain survives a broker failover under writes (3-node cluster, RF 3).

The incident this guards against: the broker an audit batch was sent to was
killed mid-request, the worker's non-idempotent producer retried, and the
batch landed twice; the verifier then found a broken chain. The transactional
writer keeps writing through the leader's crash: every batch is on the chain
exactly once and the chain verifies with no duplicate and no replay. Then the
same with a real worker under traffic: every input decided, and
``lifecycle audit verify`` passes.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agents.audit.verify import VerifyResult, verify_partition
from agents.audit.writer import AuditWriter, KafkaAuditTopic
from agents.clock import SystemClock
from agents.rules.context import AuditEntry
from agents.runtime.metrics import LifecycleMetrics
from schemas.audit import AuditEvent, AuditSource
from streams.broker.admin import admin_client, create_topic, partition_replicas
from streams.broker.launcher import LocalKafka
from streams.codec import Codec
from tests.integration.events import call_recorded
from tests.integration.pipeline import LIFECYCLE, Pipeline, pipelines, wait_decided, wait_for

KEY = b"failover-audit-key"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PER_BATCH = 5
BEFORE = 5
AFTER = 10


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


def test_audit_chain_verifies_after_its_partition_leader_is_killed_under_writes(
    kafka_cluster3_for_faults: LocalKafka,
) -> None:
    cluster = kafka_cluster3_for_faults
    admin = admin_client(cluster.bootstrap_servers)
    topic = f"audit-failover-{uuid.uuid4().hex[:12]}"
    create_topic(admin, topic, partitions=1, replication_factor=3)
    leader, _ = partition_replicas(admin, topic)
    codec = Codec()
    writer = AuditWriter(
        key=KEY,
        metrics=LifecycleMetrics.create(CollectorRegistry(), version="t", policy_version="t"),
        open_log=KafkaAuditTopic(
            topic=topic,
            app_id=f"app-{uuid.uuid4().hex[:8]}",
            client_config={"bootstrap.servers": cluster.bootstrap_servers},
            codec=codec,
            clock=SystemClock(),
        ).open,
    )

    written: list[int] = []

    async def write_batch() -> None:
        offsets = range(len(written), len(written) + PER_BATCH)
        commits = [
            await writer.append(0, [entry(o)], source=AuditSource("in", 0, o), decided_at=T0)
            for o in offsets
        ]
        await asyncio.gather(*commits)
        written.extend(offsets)

    async def write_through_a_crash() -> None:
        for _ in range(BEFORE):
            await write_batch()
        # A crash, not a clean shutdown, while batches are in flight...
        kill = asyncio.get_running_loop().run_in_executor(None, cluster.kill_node, leader)
        while not kill.done():
            await write_batch()
        await kill
        # ... and more batches once the leader is gone, until a new one is elected.
        for _ in range(AFTER):
            await write_batch()
        await writer.close()

    asyncio.run(write_through_a_crash())
    survivor = next(i for i in cluster.running_node_ids() if i != leader)

    def verify() -> VerifyResult:
        return verify_partition(
            {"bootstrap.servers": cluster.node_bootstrap(survivor)},
            topic,
            0,
            codec,
            SystemClock(),
            KEY,
        )

    # Right after the election the survivor may not yet serve the last committed
    # transaction to readers: read again until it does (a record really lost
    # never shows, and the wait runs out).
    results = [verify()]

    def shows_everything_written() -> bool:
        results.append(verify())
        return results[-1].checked >= len(written)

    wait_for(
        shows_everything_written,
        30,
        f"the chain to show all {len(written)} committed audit records",
    )
    result = results[-1]
    assert result.broken is None
    assert result.checked == len(written)
    assert (result.duplicates, result.replayed, result.redecided) == (0, 0, 0)


@pytest.fixture
def pipeline_rf3(
    kafka_cluster3_for_faults: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    # Both the pipeline's own topic setup and its worker read the replication factor.
    monkeypatch.setenv("LIFECYCLE_REPLICATION_FACTOR", "3")
    yield from pipelines(kafka_cluster3_for_faults.bootstrap_servers, tmp_path)


def test_worker_audit_verifies_after_a_broker_is_killed_under_traffic(
    kafka_cluster3_for_faults: LocalKafka, pipeline_rf3: Pipeline
) -> None:
    cluster, pipeline = kafka_cluster3_for_faults, pipeline_rf3
    admin = admin_client(cluster.bootstrap_servers)
    leader, replicas = partition_replicas(admin, pipeline.names.audit)
    assert len(replicas) == 3
    pipeline.start()
    now = datetime.now(UTC)
    events = [
        call_recorded(f"cust-fo-{i}", f"rec-fo-{i}", event_id=f"ev-fo-{i}", when=now)
        for i in range(300)
    ]
    pipeline.publish_many(events[:150])
    pipeline.wait_for_models(
        pipeline.names.audit, AuditEvent, lambda es: len(es) > 0, what="decisions being written"
    )
    # The leader of audit partition 0 crashes while the worker is writing.
    cluster.kill_node(leader)
    pipeline.publish_many(events[150:])
    wait_decided(pipeline, events, "every recording decided through the failover")
    assert pipeline.stop() == 0

    verified = subprocess.run(
        [str(LIFECYCLE), "audit", "verify"],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "duplicate" not in verified.stdout
