"""Worker CPU per event for one subject holding K records (issue 10, item 7).

    .venv/bin/python bench/subject_cpu_bench.py [--sizes 10,1000,100000]
        [--events 2000] [--rounds 3] [--stores memory,rocksdb]

The subject is given K call recordings (``seed_records``: the entries a worker
would have written for K registrations, indexes included), then ``--events``
events for that subject go through the worker's real path in process: the
``Handler`` decodes each Avro message, reads the subject's entries through the
batch layer, decides, links the audit entries onto the hash chain
(``AuditWriter``, its partition log encoding each event as the Kafka one does),
encodes commands and responses, checks every output and state entry against
``MAX_MESSAGE_BYTES``, and persists the batch's writes to the store, in batches
of ``BATCH_MAX`` as the worker takes them. What is left out is Kafka itself
(consumer, producer, broker round trips) and Faust's stream machinery: the
figures are the part of an event's cost that depends on the state.

The events are new call recordings (each adds a record, a due entry and an
audit entry) and, every tenth, a marketing opt-out (a header change): none of
them touches the K records already held, so if the cost per event grew with
K, it would be the store's doing. Stores: the in-memory sorted store, and
RocksDB (rocksdict, opened as Faust opens a table partition) with each batch
written in one write batch, as Faust applies a changelog batch.

CPU is the process's (``time.process_time``: every thread), per event, the
median over ``--rounds`` rounds; each round uses fresh event ids on the same
store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from rocksdict import Options, Rdict, WriteBatch

from agents.audit.chain import ChainHead
from agents.audit.writer import AuditWriter
from agents.clock import FakeClock
from agents.rules.policy import load_policy
from agents.rules.testing import seed_records
from agents.runtime.handler import Handler, RawMessage
from agents.runtime.metrics import LifecycleMetrics
from agents.runtime.worker import BATCH_MAX
from agents.store.faust_store import RocksEntries
from agents.store.layer import Write
from agents.store.memory import MemoryStateStore, MemoryStore
from schemas.audit import AuditEvent
from schemas.base import Channel, Frozen
from schemas.events import CallRecorded, MarketingOptOutReceived
from streams.codec import Codec
from streams.settings import REPO_ROOT
from streams.topics import TopicNames

POLICY = load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml")
NAMES = TopicNames("bench")
CODEC = Codec()
SUBJECT = "cust-bench-1"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class RocksStateStore:
    """The worker's ``StateStore`` on one local RocksDB per partition: reads as the
    worker reads (``RocksEntries``), a batch's writes in one RocksDB write batch."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.dbs: dict[int, Rdict] = {}

    def db(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            path = self.directory / f"p{partition}"
            self.dbs[partition] = Rdict(str(path), options=Options(raw_mode=True))
        return self.dbs[partition]

    def entries(self, partition: int) -> RocksEntries:
        return RocksEntries(self.db(partition))

    def apply(self, partition: int, writes: Sequence[Write]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in writes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db(partition).write(batch)

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        for partition, writes in groups:
            self.apply(partition, writes)
        return [None] * len(groups)

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()


class Delivered:
    """What the producer hands back: already confirmed (no broker here)."""

    def __await__(self) -> Any:
        return iter(())


class Outputs:
    """The worker's sender without Kafka: counts messages and their largest size."""

    def __init__(self) -> None:
        self.count = 0
        self.largest: dict[str, int] = {}

    def note(self, kind: str, size: int) -> None:
        self.count += 1
        self.largest[kind] = max(self.largest.get(kind, 0), size)

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        self.note(topic, len(value))
        return Delivered()


class EncodingLog:
    """An audit partition log that encodes each event, as the Kafka one does."""

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs

    def fence(self) -> None:
        pass

    def read_head(self) -> ChainHead:
        return ChainHead.genesis()

    def commit(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self.outputs.note(NAMES.audit, len(CODEC.encode(event)))

    def close(self) -> None:
        pass


def make_handler(store: Any, clock: FakeClock, outputs: Outputs) -> Handler:
    metrics = LifecycleMetrics.create(CollectorRegistry(), version="bench", policy_version="b")
    audit = AuditWriter(key=b"bench", metrics=metrics, open_log=lambda _p: EncodingLog(outputs))
    return Handler(
        codec=CODEC,
        policy=POLICY,
        clock=clock,
        names=NAMES,
        metrics=metrics,
        store=store,
        audit=audit,
        send=outputs,
    )


def traffic(count: int, round_no: int, now: datetime) -> list[RawMessage]:
    """``count`` encoded events for the subject: recordings, every tenth an opt-out."""
    out: list[RawMessage] = []
    for n in range(count):
        event_id = f"ev-{round_no}-{n}"
        event: Frozen
        if n % 10 == 9:
            event = MarketingOptOutReceived(
                event_id=event_id,
                subject_id=SUBJECT,
                source_system="marketing",
                event_time=now,
                channels=[Channel.EMAIL],
            )
            topic = NAMES.input("marketing")
        else:
            event = CallRecorded(
                event_id=event_id,
                subject_id=SUBJECT,
                source_system="telephony",
                event_time=now - timedelta(hours=1),
                recording_id=f"new-{round_no}-{n}",
                system="call-recorder",
            )
            topic = NAMES.input("telephony")
        out.append(RawMessage(topic, 0, n, SUBJECT.encode(), CODEC.encode(event)))
    return out


def seeded(kind: str, held: int, directory: Path) -> Any:
    """A store whose subject holds ``held`` call recordings."""
    seed = MemoryStore()
    seed_records(seed, POLICY, T0, SUBJECT, held)
    entries = list(seed.partition(0).data.items())
    memory = kind == "memory"
    store: Any = MemoryStateStore() if memory else RocksStateStore(directory / f"k{held}")
    for i in range(0, len(entries), 10_000):
        store.apply(0, entries[i : i + 10_000])
    return store


async def run_round(handler: Handler, messages: list[RawMessage]) -> float:
    start = time.process_time()
    for i in range(0, len(messages), BATCH_MAX):
        await handler.handle_batch(messages[i : i + BATCH_MAX])
    return (time.process_time() - start) / len(messages)


def measure(kind: str, held: int, events: int, rounds: int, directory: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = seeded(kind, held, directory)
    seed_s = time.perf_counter() - t0
    clock = FakeClock(T0 + timedelta(minutes=1))
    outputs = Outputs()
    handler = make_handler(store, clock, outputs)
    costs = []
    for r in range(rounds):
        messages = traffic(events, r, clock.now())
        costs.append(asyncio.run(run_round(handler, messages)))
        clock.advance(timedelta(minutes=1))
    if isinstance(store, RocksStateStore):
        store.close()
    return {"costs": costs, "seed_s": seed_s, "largest": outputs.largest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000,100000", help="records held (K), comma list")
    parser.add_argument("--events", type=int, default=2_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="memory,rocksdb")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'store':<8} {'K':>8} {'CPU/event (median)':>19} {'rounds':>22} "
        f"{'vs K=' + str(sizes[0]):>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-subject-") as tmp:
        for kind in args.stores.split(","):
            base = None
            for held in sizes:
                result = measure(kind, held, args.events, args.rounds, Path(tmp) / kind)
                median = statistics.median(result["costs"]) * 1e6
                base = base or median
                rounds = "/".join(f"{c * 1e6:.0f}" for c in result["costs"])
                print(
                    f"{kind:<8} {held:>8} {median:>16.0f} us {rounds:>19} us "
                    f"{median / base:>8.2f}x",
                    flush=True,
                )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
