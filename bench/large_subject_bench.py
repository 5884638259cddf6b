"""One subject with 10^5 records on the real worker and broker: growth, erasure, sizes.

    .venv/bin/python bench/large_subject_bench.py [--records 100000] [--partitions 2]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a one-node local broker.
Starts one real ``lifecycle worker`` (the integration tests' Pipeline: fresh
topic prefix, notice policy) and the reference downstream for the call
recorder, which answers every command (``agents/tools/downstream.py``). Then:

1. **Growth.** ``--records`` call recordings of ONE subject are published as
   fast as the producer takes them; the clock stops when the audit trail has
   every one decided (``retention-scheduled``). The worker's CPU time is read
   from ``/proc`` as it goes, so the CPU per event is given for windows of the
   growth (the subject holding about 1,000 records, about 50,000, about
   100,000): the real worker's figure beside ``bench/subject_cpu_bench.py``'s.
2. **Erasure.** An erasure request for the subject; the clock runs from its
   publication until the ``completed`` response is on the responses topic: the
   whole flow, paged decisions, chunked DELETEs, the downstream deleting and
   acknowledging each, the acks decided, the answer.
3. **Proof.** The erasure's audit pages name every record; ``lifecycle audit
   verify`` (the CLI, timed) finds the chains intact and no proof incomplete.
4. **Largest message.** Every topic the pipeline wrote in the run (state
   changelog, commands, acks, audit, responses, ticks, dead letters) is read
   back and its largest record (key + value) reported against
   ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, TopicPartition

from agents.store.base import MAX_MESSAGE_BYTES
from schemas.audit import AuditEvent
from schemas.commands import Action, Command
from schemas.events import ErasureRequested
from schemas.responses import RequestResponse, ResponseStatus
from streams.broker.launcher import LocalKafka
from streams.connection import bootstrap_from_env
from tests.integration.events import call_recorded, desk_request
from tests.integration.pipeline import LIFECYCLE, Pipeline
from tests.integration.test_large_subject_e2e import named_in
from tests.integration.topic_tail import Tail

SUBJECT = "cust-bench-large"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def largest_records(pipeline: Pipeline, topics: list[str]) -> dict[str, tuple[int, int]]:
    """Per topic: (records read, largest key + value in bytes), read uncommitted too."""
    out: dict[str, tuple[int, int]] = {}
    consumer = Consumer(
        {
            **pipeline.client_config,
            "group.id": f"size-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        for topic in topics:
            count, largest = 0, 0
            for partition in range(pipeline.partitions):
                tp = TopicPartition(topic, partition)
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, partition, low)])
                position = low
                idle = 0
                while position < high and idle < 20:
                    messages = consumer.consume(1000, timeout=0.5)
                    idle = 0 if messages else idle + 1
                    for msg in messages:
                        if msg.error() or msg.offset() is None:
                            continue
                        position = msg.offset() + 1
                        count += 1
                        size = len(msg.key() or b"") + len(msg.value() or b"")
                        largest = max(largest, size)
            out[topic] = (count, largest)
    finally:
        consumer.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up a phase after (s)")
    args = parser.parse_args()
    windows = sorted({min(1_000, args.records // 2), args.records // 2, args.records})

    with ExitStack() as stack:
        bootstrap = bootstrap_from_env()
        if bootstrap is None:
            print("starting a local one-node broker ...", flush=True)
            cluster = stack.enter_context(LocalKafka(nodes=1, name=f"bench-{uuid.uuid4().hex[:8]}"))
            bootstrap = cluster.bootstrap_servers
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-large-")))
        pipeline = Pipeline(bootstrap=bootstrap, workdir=workdir, partitions=args.partitions)
        stack.callback(pipeline.close)
        pipeline.start()
        pipeline.run_downstream("call-recorder")
        assert pipeline.process is not None
        pid = pipeline.process.pid
        audit = stack.enter_context(Tail(pipeline, pipeline.names.audit))
        answers = stack.enter_context(Tail(pipeline, pipeline.names.responses))
        print(f"worker ready (prefix {pipeline.prefix}); load average {load()}", flush=True)

        # 1. Growth.
        when = datetime.now(UTC) - timedelta(hours=1)
        events = (
            call_recorded(SUBJECT, f"rec-{n:07d}", event_id=f"ev-big-{n}", when=when)
            for n in range(args.records)
        )
        t0 = time.perf_counter()
        cpu0 = cpu_seconds(pid)
        pipeline.publish_many(events)
        published_s = time.perf_counter() - t0
        seen = 0
        samples: list[tuple[int, float]] = [(0, cpu0)]
        deadline = t0 + args.timeout
        while seen < args.records:
            if time.perf_counter() > deadline or pipeline.process.poll() is not None:
                print(f"growth stopped at {seen} decided; see {pipeline.log_path}", file=sys.stderr)
                return 1
            seen = sum(
                isinstance(e, AuditEvent) and e.decision == "retention-scheduled"
                for e in audit.now()
            )
            samples.append((seen, cpu_seconds(pid)))
            time.sleep(0.5)
        grown_s = time.perf_counter() - t0
        print(
            f"growth: {args.records} recordings of one subject published in {published_s:.1f} s, "
            f"all decided in {grown_s:.1f} s ({args.records / grown_s:,.0f} events/s); "
            f"worker CPU {samples[-1][1] - cpu0:.1f} s; load average {load()}",
            flush=True,
        )
        for upto in windows:
            # The sample window ending at the first sample that reached ``upto``.
            i = next(i for i, (n, _) in enumerate(samples) if n >= upto)
            j = max(k for k, (n, _) in enumerate(samples) if n <= max(0, upto - args.records // 10))
            j = min(j, i - 1)
            events_n = samples[i][0] - samples[j][0]
            cpu = samples[i][1] - samples[j][1]
            if events_n > 0:
                print(
                    f"  worker CPU per event while holding {samples[j][0]:>7}-{samples[i][0]:>7} "
                    f"records: {cpu / events_n * 1e6:,.0f} us ({events_n} events)"
                )

        # 2. Erasure.
        request = desk_request(ErasureRequested, SUBJECT, "req-bench-1", event_id="ev-big-erase")
        cpu1 = cpu_seconds(pid)
        t1 = time.perf_counter()
        pipeline.publish(request)
        statuses: list[ResponseStatus] = []
        while ResponseStatus.COMPLETED not in statuses:
            if time.perf_counter() > t1 + args.timeout or pipeline.process.poll() is not None:
                print(f"erasure not answered; see {pipeline.log_path}", file=sys.stderr)
                return 1
            statuses = [
                r.status
                for r in answers.now()
                if isinstance(r, RequestResponse) and r.request_id == request.request_id
            ]
            time.sleep(0.2)
        erased_s = time.perf_counter() - t1
        erase_cpu = cpu_seconds(pid) - cpu1
        deletes = {
            c.command_id: len(c.record_ids)
            for c in pipeline.models(pipeline.names.command("call-recorder"), Command)
            if c.action is Action.DELETE and c.subject_id == SUBJECT
        }
        print(
            f"erasure of {args.records} records: request to completed answer in {erased_s:.1f} s "
            f"({' -> '.join(s.value for s in statuses)}); {len(deletes)} DELETEs of at most "
            f"{max(deletes.values())} records, {sum(deletes.values())} records in all; "
            f"worker CPU {erase_cpu:.1f} s; load average {load()}",
            flush=True,
        )

        # 3. Proof.
        decided = [
            e
            for e in audit.now()
            if isinstance(e, AuditEvent)
            and e.decision == "erasure-decided"
            and e.details.get("request-id") == request.request_id
        ]
        named = {r for e in decided for r in named_in(e, "records-erased")}
        pages = [e.details.get("pages") for e in decided if "pages" in e.details]
        print(
            f"proof: {len(decided)} audit events ({pages[0] if pages else '?'} pages) name "
            f"{len(named)} distinct records of {args.records}"
        )
        t2 = time.perf_counter()
        verify = subprocess.run(
            [str(LIFECYCLE), "audit", "verify"],
            env=pipeline.env,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            check=False,
        )
        print(
            f"lifecycle audit verify: exit {verify.returncode} in {time.perf_counter() - t2:.1f} s"
        )
        for line in verify.stdout.strip().splitlines():
            print(f"  {line}")

        # 4. Largest message.
        names = pipeline.names
        topics = {
            "state changelog": f"{pipeline.settings.app_id}-subjects-changelog",
            "command (call-recorder)": names.command("call-recorder"),
            "ack": names.acks,
            "audit event": names.audit,
            "response": names.responses,
            "tick": names.ticks,
            "dead letter": names.dead_letter,
        }
        sizes = largest_records(pipeline, list(topics.values()))
        print(f"largest record per topic (key + value; bound {MAX_MESSAGE_BYTES:,} bytes):")
        for what, topic in topics.items():
            count, largest = sizes[topic]
            print(f"  {what:<24} {count:>9} records, largest {largest:>9,} bytes")
        ok = verify.returncode == 0 and len(named) == args.records
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
