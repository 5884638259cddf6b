"""Restore speed and failover time of the worker, measured from outside (events in, outputs out).

    .venv/bin/python bench/failover_bench.py [restore|failover|both] [--events 20000]
        [--partitions 6]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a one-node local broker for the
run. Workers are real ``lifecycle worker`` processes (the integration tests'
Pipeline); the worker is a black box: the only signals are events published and
the audit entries that name them, so the figures stay valid whatever the state
tables look like inside.

restore: one worker decides ``--events`` events (the worker throughput bench's
mix), is stopped (SIGTERM), and is started twice more with one probe event waiting
in each partition: once with its local state (RocksDB) kept, once with it
deleted, so that it must rebuild every table from the changelog topics before it
decides anything. Time from process start to every probe decided, both ways; the
difference is the restore, and the changelog records (high minus low watermarks of
``<app id>-*-changelog``) divided by it is the restore rate.

failover: two workers share the partitions; they decide ``--events`` events, then
one is killed (SIGKILL) and a probe event is published to every partition. Time
from the kill until every probe is decided: the survivor has noticed the death
(consumer session timeout, 10 s), taken over the dead worker's partitions,
restored their state, and decided. Run with ``LIFECYCLE_STANDBY_REPLICAS`` 0 and 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_throughput import consumed, traffic

from schemas.events import CallRecorded
from streams.broker.launcher import LocalKafka
from streams.connection import bootstrap_from_env
from tests.integration.pipeline import Pipeline
from tests.integration.topic_tail import Tail, changelog_records, decided

# After the last event is consumed: commits land and standbys catch up.
SETTLE_S = 3.0


def wait(condition: Callable[[], bool], timeout: float, what: str, *workers: Pipeline) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for worker in workers:
            if worker.process is None or worker.process.poll() is not None:
                raise SystemExit(f"worker exited while waiting for {what}; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def probes(pipeline: Pipeline, tag: str) -> set[str]:
    """One new call recording in every partition; returns their event ids."""
    ids = set()
    for p in range(pipeline.partitions):
        event = CallRecorded(
            event_id=f"probe-{tag}-{p}",
            subject_id=f"probe-{tag}-{p}",
            source_system="telephony",
            event_time=datetime.now(UTC) - timedelta(days=1),
            recording_id=f"probe-rec-{tag}-{p}",
            system="call-recorder",
        )
        pipeline.append(
            pipeline.names.input("telephony"),
            p,
            pipeline.codec.encode(event),
            key=event.subject_id.encode(),
        )
        ids.add(event.event_id)
    return ids


def build_state(workers: list[Pipeline], events: int) -> float:
    """Publish ``events`` events and wait until the workers have consumed them all."""
    t0 = time.perf_counter()
    workers[0].publish_many(traffic(events, max(events // 5, 1)))
    wait(
        lambda: sum(consumed(w) for w in workers) >= events,
        1800,
        "the events to be consumed",
        *workers,
    )
    return time.perf_counter() - t0


def start_until_decided(worker: Pipeline, tag: str) -> float:
    """Start ``worker`` with a probe waiting in every partition; seconds until all decided."""
    ids = probes(worker, tag)
    with Tail(worker, worker.names.audit, from_end=True) as audit:
        t0 = time.perf_counter()
        worker.start(timeout=600)
        wait(lambda: ids <= decided(audit), 600, f"probes {tag}", worker)
        return time.perf_counter() - t0


def restore(bootstrap: str, workdir: Path, events: int, partitions: int) -> None:
    worker = Pipeline(bootstrap=bootstrap, workdir=workdir, partitions=partitions)
    try:
        worker.start()
        built = build_state([worker], events)
        time.sleep(SETTLE_S)
        assert worker.stop() == 0
        records = changelog_records(worker)
        kept = start_until_decided(worker, "kept")
        assert worker.stop() == 0
        shutil.rmtree(worker.worker_data_dir)
        wiped = start_until_decided(worker, "wiped")
        assert worker.stop() == 0
    finally:
        worker.close()
    rebuild = wiped - kept
    print(f"restore: {events} events decided in {built:.1f} s -> {records} changelog records")
    print(f"  start to decisions, local state kept:    {kept:6.2f} s")
    print(f"  start to decisions, local state deleted: {wiped:6.2f} s")
    rate = f"{records / rebuild:,.0f} records/s" if rebuild > 0 else "n/a (within noise)"
    print(f"  rebuild from changelogs: {rebuild:.2f} s, {rate}")


def failover(bootstrap: str, workdir: Path, events: int, partitions: int, standby: int) -> float:
    env = {"LIFECYCLE_STANDBY_REPLICAS": str(standby)}
    prefix = f"t{uuid.uuid4().hex[:10]}"
    workers = []
    for name in ("w1", "w2"):
        (workdir / name).mkdir()
        workers.append(
            Pipeline(
                bootstrap=bootstrap,
                workdir=workdir / name,
                partitions=partitions,
                prefix=prefix,
                extra_env=env,
            )
        )
    try:
        for worker in workers:
            worker.start(timeout=600)
        build_state(workers, events)
        time.sleep(SETTLE_S)
        records = changelog_records(workers[0])
        survivor = workers[1]
        with Tail(survivor, survivor.names.audit, from_end=True) as audit:
            t0 = time.perf_counter()
            workers[0].kill()
            ids = probes(survivor, "failover")
            wait(lambda: ids <= decided(audit), 600, "probes after the kill", survivor)
            took = time.perf_counter() - t0
    finally:
        for worker in workers:
            worker.close()
    print(
        f"failover, standby replicas {standby}: {records} changelog records in all; "
        f"kill -9 to every partition decided again: {took:.2f} s"
    )
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", choices=["restore", "failover", "both"], default="both")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    with ExitStack() as stack:
        bootstrap = bootstrap_from_env()
        if bootstrap is None:
            print("starting a local one-node broker ...", flush=True)
            cluster = stack.enter_context(LocalKafka(nodes=1, name=f"bench-{uuid.uuid4().hex[:8]}"))
            bootstrap = cluster.bootstrap_servers

        def scratch() -> Path:
            return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-failover-")))

        if args.what in ("restore", "both"):
            restore(bootstrap, scratch(), args.events, args.partitions)
        if args.what in ("failover", "both"):
            for standby in (0, 1):
                failover(bootstrap, scratch(), args.events, args.partitions, standby)
    return 0


if __name__ == "__main__":
    sys.exit(main())
