"""End-to-end worker throughput: events published -> events consumed and decided.

    .venv/bin/python bench/worker_throughput.py [--events 20000] [--subjects 4000]
        [--partitions 6] [--workers 1|2] [--compare] [--standby N] [--profile FILE]
        [--latency N]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a one-node local broker for the
run. Starts ``--workers`` real ``lifecycle worker`` processes (the integration tests' Pipeline:
fresh topic prefix, shipped policy), waits until it is ready, then publishes a mix of
events as fast as the producer takes them: call recordings (some already past 30 days,
so they are deleted at once), record registrations, contract starts and ends (the end
deletes what is not a legal obligation) and marketing opt-outs (a suppression per
marketing system). The clock runs from the first publish until the worker's
``lifecycle_events_consumed_total`` for the input topics reaches the number published
(scraped from its /metrics). No downstream system acknowledges, so the figure is the
worker's own cost: decode, decide, emit commands and hash-chained audit, write state.

In the same run a bare aiokafka consumer then reads the same input topics from the
start, and the worker's rate is printed divided by its rate (the ratio shows
regressions whatever the machine's load). ``--compare`` runs one worker, then two
on fresh topics, and prints the two-worker rate over the one-worker rate.
``--profile FILE`` samples the (first) worker with py-spy while it works and prints
where its CPU time goes by component (raw stacks kept in FILE). ``--latency N``
then measures, on the idle worker, N erasure requests to their first delete command
and N recordings falling due to their delete command (timer firing delay).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
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
    ErasureRequested,
    MarketingOptOutReceived,
    RecordRegistered,
)
from streams.broker.launcher import LocalKafka
from streams.broker.ports import free_ports
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


# Where a sampled stack's CPU time goes: the innermost frame that names a component.
# Library frames that only serve their caller (pydantic, asyncio, tenacity, the
# socket layer) are skipped, so pydantic inside the state codec counts as state
# encoding and inside the Avro codec as Avro; "pydantic anywhere" is shown apart.
PASS_THROUGH = (
    "pydantic", "asyncio/", "threading.py", "concurrent/", "aiokafka/conn", "aiokafka/client",
    "aiokafka/util", "tenacity", "contextlib", "typing", "functools", "<string>", "abc.py",
    "enum.py",
)  # fmt: skip
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("metrics scrape (bench polling /metrics)", ("prometheus_client/exposition", "wsgiref",
                                                  "socketserver")),
    ("metrics", ("prometheus_client", "runtime/metrics.py")),
    ("audit chain (hash link, HMAC)", ("audit/chain.py",)),
    ("audit writer (transactions)", ("audit/writer.py", "confluent_kafka", "audit/heads")),
    ("state encoding (stored values)", ("store/codec.py",)),
    ("Avro encode/decode", ("streams/codec.py", "fastavro", "streams/deadletter")),
    ("table writes (changelog send, RocksDB apply)", ("FaustStateStore.persist", "faust/stores",
                                                      "faust/tables")),
    ("state reads (RocksDB, layers)", ("RocksEntries", "rocksdict", "store/layer.py",
                                       "store/keys.py")),
    ("producer sends (aiokafka producer)", ("aiokafka/producer", "faust/transport/producer",
                                            "faust/topics.py", "Producer", "runtime/worker.py",
                                            "known_topics")),
    ("decide (rules, models)", ("agents/rules", "schemas/")),
    ("handler (incl. retry wrapper)", ("runtime/handler.py", "runtime/failures.py")),
    ("Faust stream/consumer machinery", ("faust/", "mode/", "aiokafka/")),
]  # fmt: skip


def component(frames: list[str]) -> str:
    if "selectors.py" in frames[-1]:
        return "event loop waiting (epoll)"
    for frame in reversed(frames):
        if any(p in frame for p in PASS_THROUGH):
            continue
        for name, marks in COMPONENTS:
            if any(m in frame for m in marks):
                return name
    return "other (event loop, asyncio, stdlib)"


def profile_shares(raw: Path) -> list[tuple[str, float]]:
    """CPU samples per component from py-spy's raw (collapsed) output, as shares."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        name = component(stack.split(";"))
        counts[name] = counts.get(name, 0) + int(n)
        if "pydantic" in stack:
            counts["  (of which pydantic, anywhere)"] = counts.get(
                "  (of which pydantic, anywhere)", 0
            ) + int(n)
    total = sum(v for k, v in counts.items() if not k.startswith(" ")) or 1
    return sorted(((k, v / total) for k, v in counts.items()), key=lambda kv: -kv[1])


def consumed(pipelines: list[Pipeline]) -> float:
    inputs = set(pipelines[0].names.inputs)
    return sum(
        value
        for pipeline in pipelines
        for labels, value in pipeline.scrape_metrics().get("lifecycle_events_consumed_total", [])
        if labels.get("topic") in inputs
    )


def bare_consumer_rate(pipeline: Pipeline, count: int) -> float:
    """Messages/s of a bare aiokafka consumer reading the input topics from the start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> float:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=pipeline.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in pipeline.names.inputs
                for p in range(pipeline.partitions)
            ]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            t0 = time.perf_counter()
            while seen < count:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                seen += sum(len(b) for b in batches.values())
            return seen / (time.perf_counter() - t0)
        finally:
            await consumer.stop()

    return asyncio.run(run())


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--rate", "50", "--nonblocking",
         "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def throughput(
    bootstrap: str, workdir: Path, args: argparse.Namespace, workers: int, events: list[Frozen]
) -> tuple[float, list[Pipeline]]:
    """Start ``workers`` workers on fresh topics, publish ``events``, time them consumed."""
    for n in range(1, workers + 1):
        (workdir / f"w{n}").mkdir(parents=True)
    env = {} if args.standby is None else {"LIFECYCLE_STANDBY_REPLICAS": str(args.standby)}
    first = Pipeline(
        bootstrap=bootstrap, workdir=workdir / "w1", partitions=args.partitions, extra_env=env
    )
    pipelines = [first]
    first.start()
    for n in range(2, workers + 1):
        other = Pipeline(
            bootstrap=bootstrap,
            workdir=workdir / f"w{n}",
            partitions=args.partitions,
            prefix=first.prefix,
            metrics_port=free_ports(1)[0],
            extra_env=env,
        )
        pipelines.append(other)
        other.start()
    if workers > 1:
        time.sleep(args.settle)  # the group rebalances onto every worker
    print(
        f"{workers} worker(s) ready (prefix {first.prefix}, {args.partitions} partitions); "
        f"publishing {len(events)} events over {args.subjects} subjects; load {load()}",
        flush=True,
    )
    profiler = None
    if args.profile is not None:
        assert first.process is not None
        profiler = start_profiler(first.process.pid, args.profile)
    cpu_before = sum(cpu_seconds(p) for p in pipelines)
    state_before = changelog_records(first)
    wall0 = time.time()
    t0 = time.perf_counter()
    first.publish_many(events)
    published_s = time.perf_counter() - t0
    deadline = t0 + args.timeout
    done = 0.0
    while time.perf_counter() < deadline:
        # Scraping /metrics costs the worker CPU: once a second, and the end time
        # is then read from the state changelog (below), not from the scrape.
        time.sleep(1.0)
        done = consumed(pipelines)
        if done >= len(events):
            break
        for p in pipelines:
            if p.process is None or p.process.poll() is not None:
                raise SystemExit(f"worker exited; see {p.log_path}")
    cpu_s = sum(cpu_seconds(p) for p in pipelines) - cpu_before
    state_writes = changelog_records(first) - state_before
    elapsed = last_state_write(first) - wall0
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
    if done < len(events):
        raise SystemExit(f"timed out: {int(done)}/{len(events)} consumed")
    rate = len(events) / elapsed
    print(f"published {len(events)} events in {published_s:.2f} s")
    print(
        f"{workers} worker(s) consumed all {len(events)} in {elapsed:.2f} s from first "
        f"publish: {rate:,.0f} events/s; load {load()}"
    )
    print(
        f"worker CPU: {cpu_s:.1f} s for {len(events)} events = {cpu_s / len(events) * 1000:.2f} "
        f"ms/event ({len(events) / cpu_s:,.0f} events per CPU second)"
    )
    totals: dict[str, float] = {}
    by_action: dict[str, float] = {}
    for p in pipelines:
        metrics = p.scrape_metrics()
        for name in ("lifecycle_commands_emitted_total", "lifecycle_audit_events_written_total",
                     "lifecycle_dead_letters_total"):  # fmt: skip
            totals[name] = totals.get(name, 0) + sum(v for _, v in metrics.get(name, []))
        for labels, value in metrics.get("lifecycle_commands_emitted_total", []):
            by_action[labels["action"]] = by_action.get(labels["action"], 0) + value
    print(f"commands emitted: {int(totals['lifecycle_commands_emitted_total'])} "
          f"({', '.join(f'{a} {int(v)}' for a, v in sorted(by_action.items()) if v)}); "
          f"audit events written: {int(totals['lifecycle_audit_events_written_total'])}; "
          f"dead letters: {int(totals['lifecycle_dead_letters_total'])}; "
          f"state changelog records: {state_writes} "
          f"({state_writes / len(events):.1f} per event)")  # fmt: skip
    kinds = changelog_kinds(first)
    print("  per event by key kind (agents/store/keys.py): " + ", ".join(
        f"{k} {v / len(events):.2f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
    ))  # fmt: skip
    if args.profile is not None:
        print(f"profile of worker 1 (py-spy, CPU samples; raw stacks in {args.profile}):")
        for name, share in profile_shares(args.profile):
            print(f"  {share:6.1%}  {name}")
    return rate, pipelines


def cpu_seconds(pipeline: Pipeline) -> float:
    """User + system CPU time of a worker process so far (Linux /proc)."""
    assert pipeline.process is not None
    fields = Path(f"/proc/{pipeline.process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def last_state_write(pipeline: Pipeline) -> float:
    """When the last state write of the run reached the changelog (its record timestamp):
    the state is written last for every batch, so this is when the work was done."""
    from confluent_kafka import Consumer, TopicPartition

    topic = f"{pipeline.prefix}-subjects-changelog"
    consumer = Consumer({**pipeline.client_config, "group.id": "bench-end"})
    latest = 0.0
    try:
        for partition in range(pipeline.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, high - 1)])
            msg = consumer.poll(10.0)
            if msg is not None and msg.error() is None:
                latest = max(latest, msg.timestamp()[1] / 1000)
    finally:
        consumer.close()
    return latest


def changelog_records(pipeline: Pipeline) -> int:
    """Records on the state changelog so far (every worker's standby applies each)."""
    from confluent_kafka import Consumer, TopicPartition

    topic = f"{pipeline.prefix}-subjects-changelog"
    consumer = Consumer({**pipeline.client_config, "group.id": "bench-count"})
    try:
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
                for p in range(pipeline.partitions)
            )
        )
    finally:
        consumer.close()


def changelog_kinds(pipeline: Pipeline) -> dict[str, int]:
    """State changelog records by key namespace (agents/store/keys.py), deletes apart."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    topic = f"{pipeline.prefix}-subjects-changelog"
    consumer = Consumer(
        {**pipeline.client_config, "group.id": "bench-kinds", "enable.partition.eof": True}
    )
    counts: dict[str, int] = {}
    try:
        starts = [TopicPartition(topic, p, 0) for p in range(pipeline.partitions)]
        consumer.assign(starts)
        left = set(range(pipeline.partitions))
        while left:
            msg = consumer.poll(5.0)
            if msg is None:
                break
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    left.discard(msg.partition())
                continue
            kind = (msg.key() or b"?")[:1].decode("latin-1")
            kind += " (delete)" if msg.value() is None else ""
            counts[kind] = counts.get(kind, 0) + 1
    finally:
        consumer.close()
    return counts


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def latency(pipeline: Pipeline, n: int) -> None:
    """On the idle worker: erasure request -> first delete command, and a recording's due
    time -> its delete command (how late the timer fires), ``n`` of each."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    def follow(system: str) -> Consumer:
        consumer = Consumer(
            {**pipeline.client_config, "group.id": f"lat-{uuid.uuid4().hex[:6]}",
             "enable.auto.commit": False}
        )  # fmt: skip
        topic = pipeline.names.command(system)
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(pipeline.partitions)])
        consumer.poll(0.5)
        return consumer

    def wait_key(consumer: Consumer, key: bytes, timeout: float = 30.0) -> float:
        end = time.time() + timeout
        while time.time() < end:
            msg = consumer.poll(0.01)
            if msg is not None and msg.error() is None and msg.key() == key:
                return time.time()
        raise SystemExit(f"no command for {key!r} within {timeout} s")

    crm = follow("crm")
    erasure: list[float] = []
    now = datetime.now(UTC)
    for i in range(n):
        subject = f"lat-{uuid.uuid4().hex[:8]}"
        pipeline.publish(
            RecordRegistered(
                event_id=f"lat-reg-{i}", subject_id=subject, source_system="crm",
                event_time=now - timedelta(days=3), record_id=f"lat-row-{i}", system="crm",
                category=DataCategory.CORRESPONDENCE, source=DataSource.SUBJECT,
                legal_basis=LegalBasis.CONTRACT, purpose="service-delivery",
            )
        )  # fmt: skip
        time.sleep(1.0)  # registered and idle again
        request = ErasureRequested(
            event_id=f"lat-er-{i}", subject_id=subject, source_system="privacy-desk",
            event_time=datetime.now(UTC), request_id=f"lat-req-{i}",
        )  # fmt: skip
        t0 = time.time()
        pipeline.publish(request)
        erasure.append(wait_key(crm, subject.encode()) - t0)
    crm.close()
    ms = sorted(round(x * 1000) for x in erasure)
    print(f"erasure request -> delete command, idle worker, {n} runs: median "
          f"{statistics.median(ms):.0f} ms, max {ms[-1]} ms")  # fmt: skip

    recorder = follow("call-recorder")
    lags: list[float] = []
    for i in range(n):
        subject = f"tim-{uuid.uuid4().hex[:8]}"
        due = datetime.now(UTC) + timedelta(seconds=3)
        pipeline.publish(
            CallRecorded(
                event_id=f"tim-{i}", subject_id=subject, source_system="telephony",
                event_time=due - timedelta(days=30), recording_id=f"tim-rec-{i}",
                system="call-recorder",
            )
        )  # fmt: skip
        lags.append(wait_key(recorder, subject.encode()) - due.timestamp())
    recorder.close()
    ms = sorted(round(x * 1000) for x in lags)
    print(f"recording due -> delete command (timer firing delay), {n} runs: median "
          f"{statistics.median(ms):.0f} ms, max {ms[-1]} ms")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=4_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--compare", action="store_true", help="one worker, then two")
    parser.add_argument(
        "--standby", type=int, help="LIFECYCLE_STANDBY_REPLICAS for the workers (default 1)"
    )
    parser.add_argument("--settle", type=float, default=15.0, help="wait for the rebalance (s)")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of worker 1 to this file")
    parser.add_argument("--latency", type=int, default=0, help="latency runs afterwards")
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
        rates: dict[int, float] = {}
        for workers in (1, 2) if args.compare else (args.workers,):
            with ExitStack() as run:
                rate, pipelines = throughput(
                    bootstrap, workdir / str(workers), args, workers, events
                )
                for p in pipelines:
                    run.callback(p.close)
                rates[workers] = rate
                bare = bare_consumer_rate(pipelines[0], len(events))
                print(
                    f"bare aiokafka consumer, same topics: {bare:,.0f} messages/s; "
                    f"worker rate / bare consumer rate = {rate / bare:.4f}"
                )
                if args.latency:
                    latency(pipelines[0], args.latency)
                args.profile = None  # the profile is of the first run
        if len(rates) == 2:
            print(f"two workers / one worker = {rates[2] / rates[1]:.2f}x; load {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
