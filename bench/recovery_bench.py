"""Worker recovery with 10^6 scheduled items: wiped and intact local store (issue 10).

    .venv/bin/python bench/recovery_bench.py [--items 1000000] [--per-subject 100]
        [--partitions 6] [--rounds 1]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a one-node local broker.

The state is written straight into the worker's state changelog, as a worker
would have left it: ``--items`` call recordings scheduled for deletion (each a
record entry and its due entry), ``--per-subject`` per subject, with each
subject's header and timer entry (the entries ``seed_records`` makes, the
subject id substituted), in the subject's partition (murmur2, as the worker's
inputs are partitioned). None of these is due within the run. Then, per round:

* **wiped**: the worker's local RocksDB is deleted and a worker started: it
  restores the whole changelog;
* **intact**: the worker is stopped and started again with its RocksDB kept:
  it restores only what the changelog gained meanwhile.

Before each start, a few probe subjects (one per partition) are added to the
changelog whose one recording is already overdue. Each start is timed to the
``[^Worker]: Ready`` line, and to when the worker's timer has found every
probe due on disk and its DELETE is on the call recorder's command topic:
restore plus the first timer rounds plus a decision, i.e. when the scheduler
serves due items again. Nothing is rebuilt in memory (docs/state.md, "Time on
disk"); the wiped figure is the changelog restore.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.partitioner import murmur2
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from agents.rules.policy import load_policy
from agents.rules.testing import seed_records
from agents.store.memory import MemoryStore
from schemas.commands import Action, Command
from streams.broker.launcher import LocalKafka
from streams.connection import bootstrap_from_env
from tests.integration.pipeline import NOTICE_POLICY, Pipeline
from tests.integration.topic_tail import Tail, changelog_records

TEMPLATE = "sub-TEMPLATE"


def partition_of(subject: str, partitions: int) -> int:
    """The partition the murmur2 partitioner (Kafka's and the worker's) picks."""
    return int(murmur2(subject.encode()) & 0x7FFFFFFF) % partitions


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def template(records: int, when: datetime) -> list[tuple[bytes, bytes]]:
    """One subject's entries holding ``records`` recordings made at ``when``."""
    store = MemoryStore()
    seed_records(store, load_policy(NOTICE_POLICY), when, TEMPLATE, records)
    return list(store.partition(0).data.items())


class Changelog:
    """Writes entries to the worker's state changelog, each in its subject's partition."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.topic = f"{pipeline.settings.app_id}-subjects-changelog"
        self.producer = Producer(
            {**pipeline.client_config, "linger.ms": 50, "batch.num.messages": 10_000}
        )
        self.written = 0

    def create(self) -> None:
        admin = AdminClient(self.pipeline.client_config)
        topic = NewTopic(
            self.topic,
            num_partitions=self.pipeline.partitions,
            config={"cleanup.policy": "compact"},
        )
        admin.create_topics([topic])[self.topic].result(30)

    def subject(self, subject: str, entries: list[tuple[bytes, bytes]]) -> None:
        partition = partition_of(subject, self.pipeline.partitions)
        name = subject.encode()
        for key, value in entries:
            while True:
                try:
                    self.producer.produce(
                        self.topic,
                        key=key.replace(TEMPLATE.encode(), name),
                        value=value.replace(TEMPLATE.encode(), name) if value else value,
                        partition=partition,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.written += 1
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(300) == 0


def probes(pipeline: Pipeline, changelog: Changelog, name: str) -> set[str]:
    """One subject per partition with one recording overdue, added to the changelog."""
    overdue = template(1, datetime.now(UTC) - timedelta(days=400))
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < pipeline.partitions:
        subject = f"probe-{name}-{n}"
        chosen.setdefault(partition_of(subject, pipeline.partitions), subject)
        n += 1
    for subject in chosen.values():
        changelog.subject(subject, overdue)
    changelog.flush()
    return set(chosen.values())


def timed_start(pipeline: Pipeline, commands: Tail, wanted: set[str], timeout: float) -> str:
    t0 = time.perf_counter()
    pipeline.start(timeout=timeout)
    ready = time.perf_counter() - t0
    served: set[str] = set()
    while not wanted <= served:
        if time.perf_counter() - t0 > timeout:
            return f"probes not served within {timeout:.0f} s ({len(served & wanted)})"
        served |= {
            c.subject_id
            for c in commands.now()
            if isinstance(c, Command) and c.action is Action.DELETE
        }
        time.sleep(0.2)
    due = time.perf_counter() - t0
    return f"ready in {ready:.1f} s, due items served in {due:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="scheduled recordings")
    parser.add_argument("--per-subject", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    subjects = args.items // args.per_subject

    with ExitStack() as stack:
        bootstrap = bootstrap_from_env()
        if bootstrap is None:
            print("starting a local one-node broker ...", flush=True)
            cluster = stack.enter_context(LocalKafka(nodes=1, name=f"bench-{uuid.uuid4().hex[:8]}"))
            bootstrap = cluster.bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-recovery-")))
        pipeline = Pipeline(bootstrap=bootstrap, workdir=workdir, partitions=args.partitions)
        stack.callback(pipeline.close)
        changelog = Changelog(pipeline)
        changelog.create()

        t0 = time.perf_counter()
        entries = template(args.per_subject, datetime.now(UTC))  # due in 30 days
        for n in range(subjects):
            changelog.subject(f"sub-{n:07d}", entries)
        changelog.flush()
        print(
            f"{subjects * args.per_subject:,} scheduled recordings over {subjects:,} subjects: "
            f"{changelog.written:,} changelog records written in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        commands = stack.enter_context(Tail(pipeline, pipeline.names.command("call-recorder")))
        for r in range(args.rounds):
            for mode in ("wiped", "intact"):
                if pipeline.process is not None:
                    pipeline.stop()
                if mode == "wiped":
                    shutil.rmtree(pipeline.worker_data_dir, ignore_errors=True)
                wanted = probes(pipeline, changelog, f"{r}{mode}")
                before = load()
                result = timed_start(pipeline, commands, wanted, args.timeout)
                print(
                    f"round {r + 1}, local store {mode}: {result} "
                    f"({changelog_records(pipeline):,} changelog records; "
                    f"load average {before} -> {load()})",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
