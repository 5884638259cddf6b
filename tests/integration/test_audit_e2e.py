"""The audit trail written by the real worker verifies, and tampering with it is named.

Traffic through the worker fills both audit partitions; ``verify_partition`` and
``lifecycle audit verify`` find them intact. Then one forged record is appended
to each partition: on partition 0 a copy of the last event with its rule changed
but its hash kept; on partition 1 an event whose hash is recomputed but whose
prev_hash points nowhere. Both are named by offset, and the CLI exits 2.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.audit.chain import event_hash
from agents.audit.verify import VerifyResult, verify_partition
from agents.clock import SystemClock
from schemas.audit import AuditEvent
from tests.integration.events import call_recorded
from tests.integration.pipeline import LIFECYCLE, Pipeline, pipelines, wait_decided


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    yield from pipelines(kafka_bootstrap, tmp_path)


def audit_key(pipeline: Pipeline) -> bytes:
    return pipeline.settings.audit_hmac_key.get_secret_value().encode()


def verify(pipeline: Pipeline, partition: int) -> VerifyResult:
    return verify_partition(
        {"bootstrap.servers": pipeline.bootstrap},
        pipeline.names.audit,
        partition,
        pipeline.codec,
        SystemClock(),
        audit_key(pipeline),
    )


def cli_verify(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LIFECYCLE), "audit", "verify"],
        env={
            **pipeline.env,
            "KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap,
            "LIFECYCLE_TOPIC_PREFIX": pipeline.prefix,
            "LIFECYCLE_PARTITIONS": str(pipeline.partitions),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_audit_chain_verifies_and_forged_records_are_named(pipeline: Pipeline) -> None:
    assert pipeline.partitions == 2
    pipeline.start()
    now = datetime.now(UTC)
    for i in range(8):
        pipeline.publish(
            call_recorded(
                f"cust-audit-{i}",
                f"rec-audit-{i}",
                event_id=f"ev-audit-{i}",
                when=now - timedelta(days=1),
            )
        )
    pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: sum(e.decision == "retention-scheduled" for e in es) == 8,
        what="every recording audited",
    )
    assert pipeline.stop() == 0  # nothing else writes to the trail from here on

    by_partition: dict[int, list[tuple[int, AuditEvent]]] = {0: [], 1: []}
    for partition, offset, event in pipeline.read(pipeline.names.audit):
        by_partition[partition].append((offset, event))
    assert all(by_partition.values()), "traffic reached both audit partitions"

    for partition, events in by_partition.items():
        result = verify(pipeline, partition)
        assert result.broken is None
        assert result.checked == len(events)
    intact = cli_verify(pipeline)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    for partition, events in by_partition.items():
        assert f"partition {partition}: {len(events)} event(s), chain intact" in intact.stdout

    # Partition 0: the last decision rewritten, its hash left as it was.
    _, last0 = by_partition[0][-1]
    rewritten = last0.model_copy(update={"rule_id": "N7.forged", "decision": "nothing-happened"})
    assert rewritten.hash == last0.hash
    at0 = pipeline.append(pipeline.names.audit, 0, pipeline.codec.encode(rewritten))
    # Partition 1: a well-formed event with a correct hash that does not follow the chain.
    _, last1 = by_partition[1][-1]
    detached = last1.model_copy(
        update={
            "audit_id": f"aud-1-{last1.sequence + 1}",
            "sequence": last1.sequence + 1,
            "prev_hash": "f" * 64,
            "decision": "forged",
        }
    )
    # Forged by someone holding the key: the broken link still gives it away.
    detached = detached.model_copy(update={"hash": event_hash(detached, audit_key(pipeline))})
    assert detached.prev_hash != last1.hash
    at1 = pipeline.append(pipeline.names.audit, 1, pipeline.codec.encode(detached))

    broken0 = verify(pipeline, 0).broken
    assert broken0 is not None
    assert (broken0.offset, broken0.sequence) == (at0, last0.sequence)
    assert "hash does not match" in broken0.reason
    broken1 = verify(pipeline, 1).broken
    assert broken1 is not None
    assert (broken1.offset, broken1.sequence) == (at1, last1.sequence + 1)
    assert "prev_hash does not match" in broken1.reason

    tampered = cli_verify(pipeline)
    assert tampered.returncode == 2, tampered.stdout + tampered.stderr
    assert f"partition 0: BROKEN at offset {at0} " in tampered.stdout
    assert f"partition 1: BROKEN at offset {at1} " in tampered.stdout
    # Verifying only the range before the forgeries still succeeds.
    assert (
        verify_partition(
            {"bootstrap.servers": pipeline.bootstrap},
            pipeline.names.audit,
            0,
            pipeline.codec,
            SystemClock(),
            audit_key(pipeline),
            end=at0,
        ).broken
        is None
    )


def test_audit_verifies_after_a_worker_is_killed_mid_stream(pipeline: Pipeline) -> None:
    """kill -9 while decisions are being written: the restarted worker replays what
    was not committed, and the chain verifies with those replays counted."""
    pipeline.start()
    now = datetime.now(UTC)
    events = [
        call_recorded(
            f"cust-crash-{i}",
            f"rec-crash-{i}",
            event_id=f"ev-crash-{i}",
            when=now - timedelta(days=1),
        )
        for i in range(400)
    ]
    pipeline.publish_many(events)
    pipeline.wait_for_models(
        pipeline.names.audit, AuditEvent, lambda es: len(es) > 0, what="decisions being written"
    )
    pipeline.kill()
    pipeline.start()
    wait_decided(pipeline, events, "every recording decided after the restart")
    assert pipeline.stop() == 0

    intact = cli_verify(pipeline)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    for partition in range(pipeline.partitions):
        result = verify(pipeline, partition)
        assert result.broken is None
        audit = [e for p, _, e in pipeline.read(pipeline.names.audit) if p == partition]
        # One audit event per recording decision: any input decided twice is a replay.
        assert result.replayed + result.redecided == len(audit) - len({e.source for e in audit})
        assert result.duplicates == 0
