"""Cost of replaying erasures after a restore, on a real broker.

Fills a fresh erasure ledger with the deletions of one subject's 10^5-record
erasure in ``crm`` (200 entries of 500 record ids, as the worker writes them)
among ``--others`` entries of other systems and subjects, then times
``ErasureReplayer.replay("crm", since)``: reading the ledger from ``since`` and
publishing one ``ErasureReplay`` per entry (confirmed by the broker). Uses
``KAFKA_BOOTSTRAP_SERVERS`` or the local broker (``lifecycle kafka up``).
Run: .venv/bin/python bench/replay_bench.py
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer

from agents.clock import SystemClock
from agents.rules import limits
from agents.rules.ledger import ledger_key
from agents.rules.policy import load_policy
from agents.runtime.replayer import ErasureReplayer
from schemas.base import DataCategory
from schemas.internal import ErasureLedgerEntry
from streams.admin import ensure_topics
from streams.codec import Codec
from streams.connection import bootstrap_servers
from streams.settings import REPO_ROOT, Settings
from streams.topics import MURMUR2_PARTITIONER, TopicNames


def entry(n: int, system: str, subject: str, records: int, now: datetime) -> ErasureLedgerEntry:
    return ErasureLedgerEntry(
        command_id=f"cmd-{uuid.uuid4().hex}",
        system=system,
        subject_id=subject,
        controller_id="smartcomms",
        record_ids=[f"{subject}-rec-{n:04d}-{i:06d}" for i in range(records)],
        categories=[DataCategory.CORRESPONDENCE],
        rule_id="N9.erasure",
        request_id=f"req-{subject}",
        erased_at=now,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=10_000)
    args = parser.parse_args()
    bootstrap = bootstrap_servers()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(topic_prefix=prefix, partitions=6)
    policy = load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml")
    ensure_topics(settings, bootstrap, [s.id for s in policy.systems], policy.topic_retention())
    names, codec, now = TopicNames(prefix), Codec(), datetime.now(UTC)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": MURMUR2_PARTITIONER, "linger.ms": 20}
    )
    since = now - timedelta(seconds=5)
    chunks = -(-args.records // limits.CHUNK)
    entries = [entry(n, "crm", "cust-big", limits.CHUNK, now) for n in range(chunks)]
    systems = [s.id for s in policy.systems if s.id != "crm"]
    entries += [
        entry(n, systems[n % len(systems)], f"cust-{n}", 3, now) for n in range(args.others)
    ]
    for e in entries:
        while True:
            try:
                producer.produce(
                    names.erasure_ledger,
                    key=ledger_key(e.system, e.command_id),
                    value=codec.encode(e),
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0
    replayer = ErasureReplayer(bootstrap, settings, clock=SystemClock())
    started = time.perf_counter()
    report = replayer.replay("crm", since, "bench-restore")
    took = time.perf_counter() - started
    print(
        f"ledger: {len(entries)} entries ({chunks} of crm: {args.records} records of one "
        f"subject; {args.others} of other systems)"
    )
    print(f"replay: {report.summary()}")
    print(f"replay took {took:.2f} s ({len(entries) / took:,.0f} ledger entries read/s)")


if __name__ == "__main__":
    main()
