"""End-to-end worker throughput: events published -> events consumed and decided.

    .venv/bin/python bench/worker_throughput.py [--events 20000] [--subjects 4000]
        [--partitions 6]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a one-node local broker for the
run. Starts one real ``lifecycle worker`` process (the integration tests' Pipeline:
fresh topic prefix, shipped policy), waits until it is ready, then publishes a mix of
events as fast as the producer takes them: call recordings (some already past 30 days,
so they are deleted at once), record registrations, contract starts and ends (the end
deletes what is not a legal obligation) and marketing opt-outs (a suppression per
marketing system). The clock runs from the first publish until the worker's
``lifecycle_events_consumed_total`` for the input topics reaches the number published
(scraped from its /metrics). No downstream system acknowledges, so the figure is the
worker's own cost: decode, decide, emit commands and hash-chained audit, write state.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.base import Channel, DataCategory, DataSource, Frozen, LegalBasis
from schemas.events import (
    CallRecorded,
    ContractEnded,
    ContractStarted,
    MarketingOptOutReceived,
    RecordRegistered,
)
from streams.broker.launcher import LocalKafka
from streams.connection import bootstrap_from_env
from tests.integration.pipeline import Pipeline

REGISTRATIONS = [
    ("crm", DataCategory.CORRESPONDENCE, LegalBasis.CONTRACT, "service-delivery", "crm"),
    ("billing-db", DataCategory.BILLING, LegalBasis.LEGAL_OBLIGATION, "billing-accounting",
     "billing"),
    ("marketing-platform", DataCategory.MARKETING_PROFILE, LegalBasis.LEGITIMATE_INTERESTS,
     "sales-marketing", "marketing"),
    ("web-analytics", DataCategory.WEBSITE_VISITS, LegalBasis.CONSENT, "website-analytics",
     "web-analytics"),
]  # fmt: skip


def traffic(n: int, subjects: int, seed: int = 7) -> Iterator[Frozen]:
    """``n`` events over ``subjects`` subjects: ~40% recordings, ~35% registrations,
    ~15% contract starts/ends, ~10% opt-outs."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    contracts: dict[str, str] = {}
    for i in range(n):
        subject = f"bench-{rng.randrange(subjects):06d}"
        base = {"event_id": f"ev-{i}", "subject_id": subject}
        roll = rng.random()
        if roll < 0.40:
            age = timedelta(days=rng.choice([1, 5, 31]))  # a third are due at once
            yield CallRecorded(
                **base,
                source_system="telephony",
                event_time=now - age,
                recording_id=f"rec-{i}",
                system="call-recorder",
            )
        elif roll < 0.75:
            system, category, basis, purpose, source = rng.choice(REGISTRATIONS)
            yield RecordRegistered(
                **base,
                source_system=source,
                event_time=now - timedelta(days=rng.randrange(1, 300)),
                record_id=f"row-{i}",
                system=system,
                category=category,
                source=DataSource.SUBJECT,
                legal_basis=basis,
                purpose=purpose,
                contract_id=contracts.get(subject),
            )
        elif roll < 0.90:
            if subject in contracts:
                yield ContractEnded(
                    **base,
                    source_system="billing",
                    event_time=now - timedelta(minutes=1),
                    contract_id=contracts.pop(subject),
                )
            else:
                contracts[subject] = f"k-{i}"
                yield ContractStarted(
                    **base,
                    source_system="billing",
                    event_time=now - timedelta(days=400),
                    contract_id=contracts[subject],
                )
        else:
            yield MarketingOptOutReceived(
                **base,
                source_system="marketing",
                event_time=now,
                channels=[rng.choice(list(Channel))],
            )


def consumed(pipeline: Pipeline) -> float:
    inputs = set(pipeline.names.inputs)
    return sum(
        value
        for labels, value in pipeline.scrape_metrics().get("lifecycle_events_consumed_total", [])
        if labels.get("topic") in inputs
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=4_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    args = parser.parse_args()

    events = list(traffic(args.events, args.subjects))
    with ExitStack() as stack:
        bootstrap = bootstrap_from_env()
        if bootstrap is None:
            print("starting a local one-node broker ...", flush=True)
            cluster = stack.enter_context(LocalKafka(nodes=1, name=f"bench-{uuid.uuid4().hex[:8]}"))
            bootstrap = cluster.bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-worker-")))
        pipeline = Pipeline(bootstrap=bootstrap, workdir=workdir, partitions=args.partitions)
        stack.callback(pipeline.close)
        pipeline.start()
        print(
            f"worker ready (prefix {pipeline.prefix}, {args.partitions} partitions); "
            f"publishing {len(events)} events over {args.subjects} subjects",
            flush=True,
        )

        t0 = time.perf_counter()
        pipeline.publish_many(events)
        published_s = time.perf_counter() - t0
        deadline = t0 + args.timeout
        done = 0.0
        while time.perf_counter() < deadline:
            done = consumed(pipeline)
            if done >= len(events):
                break
            if pipeline.process is None or pipeline.process.poll() is not None:
                print(f"worker exited; see {pipeline.log_path}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        if done < len(events):
            print(f"timed out: {int(done)}/{len(events)} consumed", file=sys.stderr)
            return 1
        metrics = pipeline.scrape_metrics()

        def total(name: str) -> int:
            return int(sum(v for _, v in metrics.get(name, [])))

        by_action: dict[str, float] = {}
        for labels, value in metrics.get("lifecycle_commands_emitted_total", []):
            by_action[labels["action"]] = by_action.get(labels["action"], 0) + value
        print(
            f"published {len(events)} events in {published_s:.2f} s "
            f"({len(events) / published_s:,.0f} events/s producer side)"
        )
        print(
            f"worker consumed all {len(events)} in {elapsed:.2f} s from first publish: "
            f"{len(events) / elapsed:,.0f} events/s"
        )
        print(f"commands emitted: {total('lifecycle_commands_emitted_total')} "
              f"({', '.join(f'{a} {int(v)}' for a, v in sorted(by_action.items()) if v)}); "
              f"audit events written: {total('lifecycle_audit_events_written_total')}; "
              f"dead letters: {total('lifecycle_dead_letters_total')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
