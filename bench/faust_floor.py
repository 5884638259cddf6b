"""What Faust itself costs per event, with none of our work: the ceiling for a Faust worker.

    .venv/bin/python bench/faust_floor.py [--events 20000] [--partitions 6]
        [--modes empty,send1,store5,send1store5] [--profile FILE]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a one-node local broker. Publishes
``--events`` records of 300 bytes over the five input topics (keys spread like the
mixed bench's subjects), then, for each mode, starts a worker process built by the
project's own ``make_app`` (same consumer, producer, RocksDB and commit settings as
``lifecycle worker``) whose agent reads them in the worker's batches
(``take_events(200, within=0.05)``) and does:

- ``empty``: nothing (Faust's stream, consumer, acking and commit machinery);
- ``send1``: one produced output per event, every batch's sends awaited before the
  batch returns (as the worker waits for its commands before writing state);
- ``store5``: five state writes per event through the worker's own state store
  (``FaustStateStore.persist``: the batch's changelog records confirmed, then
  applied to RocksDB); the worker writes about five per event;
- ``send1store5``: both, outputs first (the least any decision of this pipeline does:
  a command or an audit entry out, the subject's state written).

It prints the rate from the first event to the last and the process CPU per event.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.broker.launcher import LocalKafka
from streams.connection import bootstrap_from_env

INPUTS = ("crm", "billing", "telephony", "marketing", "privacy-desk")
MODES = ("empty", "send1", "store5", "send1store5")


def publish(bootstrap: str, prefix: str, events: int, partitions: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [f"{prefix}.{name}" for name in INPUTS] + [f"{prefix}.out"]
    for fut in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
        fut.result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(7)
    value = bytes(300)
    for _ in range(events):
        key = f"bench-{rng.randrange(4000):06d}".encode()
        while True:
            try:
                producer.produce(f"{prefix}.{rng.choice(INPUTS)}", key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


def worker(bootstrap: str, prefix: str, events: int, partitions: int, kind: str) -> None:
    """The worker process: read ``events`` records, print the figures, exit."""
    import resource

    import faust
    import mode.loop

    from agents.runtime.faust_app import make_app, raw_topic
    from agents.store.faust_store import FaustStateStore
    from streams.settings import Settings

    mode.loop.use("uvloop")
    workdir = Path(tempfile.mkdtemp(prefix="faust-floor-"))
    settings = Settings(
        app_id=f"{prefix}-{kind}",
        var_dir=workdir,
        partitions=partitions,
        standby_replicas=0,
        web_port=0,
    )
    app = make_app(settings, bootstrap)
    source = raw_topic(app, *(f"{prefix}.{n}" for n in INPUTS), partitions=partitions)
    out = raw_topic(app, f"{prefix}.out", partitions=partitions)
    table = app.Table("t", partitions=partitions, key_type=bytes, value_type=bytes)
    store = FaustStateStore(table)
    writes = 5 if "store5" in kind else 0
    seen = [0]
    started: list[float] = []

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    @app.agent(source, concurrency=1)
    async def agent(stream: object) -> None:
        async for batch in stream.take_events(200, within=0.05):  # type: ignore[attr-defined]
            if not started:
                started.extend((time.perf_counter(), cpu()))
            futures = []
            groups = []
            for event in batch:
                m = event.message
                if kind.startswith("send1"):
                    futures.append(await out.send(key=m.key, value=m.value))
                if writes:
                    groups.append(
                        (m.partition, [(m.key + bytes([i]), m.value) for i in range(writes)])
                    )
            for fut in futures:
                await fut
            if groups:
                failed = [r for r in await store.persist(groups) if r is not None]
                assert not failed, failed
            seen[0] += len(batch)
            if seen[0] >= events:
                wall = time.perf_counter() - started[0]
                spent = cpu() - started[1]
                print(
                    f"{kind:7s} {seen[0]} events in {wall:.2f} s: {seen[0] / wall:,.0f} events/s; "
                    f"CPU {spent / seen[0] * 1000:.3f} ms/event",
                    flush=True,
                )
                os._exit(0)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of each mode to FILE.MODE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: mode,prefix,bootstrap
    args = parser.parse_args()
    if args.worker:
        mode, prefix, bootstrap = args.worker.split(",", 2)
        worker(bootstrap, prefix, args.events, args.partitions, mode)
        return 0
    with ExitStack() as stack:
        bootstrap = bootstrap_from_env()
        if bootstrap is None:
            print("starting a local one-node broker ...", flush=True)
            cluster = stack.enter_context(LocalKafka(nodes=1, name=f"floor-{uuid.uuid4().hex[:8]}"))
            bootstrap = cluster.bootstrap_servers
        prefix = f"floor-{uuid.uuid4().hex[:8]}"
        publish(bootstrap, prefix, args.events, args.partitions)
        print(f"published {args.events} records to {prefix}.*; load {os.getloadavg()[0]:.2f}")
        for mode in args.modes.split(","):
            spy: list[str] = []
            if args.profile is not None:
                out = f"{args.profile}.{mode}"
                py_spy = str(Path(sys.executable).parent / "py-spy")
                spy = [py_spy, "record", "--rate", "200", "--format", "raw", "--output", out, "--"]
            subprocess.run(
                [*spy, sys.executable, __file__, "--events", str(args.events), "--partitions",
                 str(args.partitions), "--worker", f"{mode},{prefix},{bootstrap}"],
                check=True,
                timeout=180,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
