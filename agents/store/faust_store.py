"""The state store on a Faust table: RocksDB per partition, a changelog topic.

Writes go to the table's changelog topic in the subject's own partition, a
batch's writes of one partition in one Kafka record batch (the producer's
public ``create_batch``/``send_batch``: one produce entry and one delivery to
wait for, instead of a Faust message, future and sensor call per key, which was
the largest part of the worker's per-event cost). A record batch is appended
atomically and its records get consecutive offsets, so each write's offset is
the batch's base offset plus its position. Once the broker has confirmed them
all, they are applied to the local store with ``Store.apply_changelog_batch``,
exactly as a standby replica or a recovery applies the changelog (it also
records the changelog offset, so a restart recovers what came after). Nothing
reads Faust's current-event context. A crash between the two leaves the
changelog ahead of the local store, which recovery fixes.

Reads need a partition's RocksDB handle for range scans, which Faust exposes
only privately (``Store._db_for_partition``), and the batch interface needs
Faust's aiokafka producer, which Faust holds privately
(``Producer._ensure_producer``). These are the two places that use private
Faust API (``rocks_db`` and ``aiokafka_producer``);
``tests/unit/test_faust_store.py`` fails the day they change meaning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from faust.types import TP
from rocksdict import BottommostLevelCompaction, CompactOptions

from agents.store.base import StoreError
from agents.store.layer import Write

# Faust keeps each partition's changelog offset in the same RocksDB.
FAUST_OFFSET_KEY = b"__faust\x00offset__"


class RocksEntries:
    """One partition of the table, read directly from its RocksDB (``Entries``).
    A failing read raises ``StoreError`` (not a rules error)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self.db.get(key)
        except Exception as exc:
            raise StoreError(exc) from exc
        return value

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            for key, value in self.db.items(from_key=start):
                if key >= stop:
                    return
                if key != FAUST_OFFSET_KEY:
                    yield key, value
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(exc) from exc


@dataclass(frozen=True)
class _Message:
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None


@dataclass(frozen=True)
class _Applied:
    """What ``apply_changelog_batch`` reads of a changelog event."""

    message: _Message


def rocks_db(table: Any, partition: int) -> Any:
    """The RocksDB (rocksdict ``Rdict``) holding ``table``'s ``partition`` (private Faust API)."""
    return table.data._db_for_partition(partition)


def forget_deleted(db: Any) -> None:
    """Rewrite ``db`` whole, so that values deleted or overwritten since (an erased
    subject's entries) leave its files: RocksDB keeps a deleted value in its
    write-ahead log and sorted files until a compaction meets its tombstone
    (N9.erasure-own-topics, docs/own-data.md). Blocking: run it off the event loop."""
    options = CompactOptions()
    options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
    db.flush()
    db.compact_range(None, None, options)


def _same(value: Any) -> Any:
    return value


class BatchProducer(Protocol):
    """What ``persist`` needs of aiokafka's ``AIOKafkaProducer``."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Awaitable[Any]: ...


def aiokafka_producer(app: Any) -> BatchProducer:
    """The aiokafka producer under Faust's (private Faust API); Faust's own sends
    go through it too, so the changelog shares its connection and ordering."""
    producer: BatchProducer = app.producer._ensure_producer()
    return producer


@dataclass
class _Open:
    """A record batch being filled for one changelog partition."""

    batch: Any
    groups: set[int] = field(default_factory=set)
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)


class FaustStateStore:
    """``StateStore`` on a Faust table with raw bytes keys and values."""

    def __init__(self, table: Any, producer: Callable[[], BatchProducer] | None = None) -> None:
        self.table = table
        # Resolved at the first write: Faust starts its producer with the app.
        self._producer = producer or (lambda: aiokafka_producer(table.app))

    def entries(self, partition: int) -> RocksEntries:
        return RocksEntries(rocks_db(self.table, partition))

    def active_partitions(self) -> list[int]:
        """Partitions whose table this worker owns now (not standbys)."""
        topic = self.table.changelog_topic.get_topic_name()
        actives = self.table.app.assignor.assigned_actives()
        return sorted({tp.partition for tp in actives if tp.topic == topic})

    def held_partitions(self) -> list[int]:
        """Partitions whose table this worker holds now, as owner or standby."""
        topic = self.table.changelog_topic.get_topic_name()
        assignor = self.table.app.assignor
        held = {*assignor.assigned_actives(), *assignor.assigned_standbys()}
        return sorted({tp.partition for tp in held if tp.topic == topic})

    async def forget_deleted(self) -> None:
        """Compact every partition held, one at a time in a worker thread, so
        deleted state does not outlive the policy's own-topics bound on disk."""
        for partition in self.held_partitions():
            await asyncio.to_thread(forget_deleted, rocks_db(self.table, partition))

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(groups)
        if not any(writes for _, writes in groups):
            return results
        producer = self._producer()
        name = self.table.changelog_topic.get_topic_name()
        # Batches in send order, with the partition each goes to.
        sent: list[tuple[int, _Open, Awaitable[Any]]] = []
        filling: dict[int, _Open] = {}

        async def send(partition: int) -> None:
            full = filling.pop(partition)
            full.batch.close()  # nothing else may join it
            sent.append(
                (partition, full, await producer.send_batch(full.batch, name, partition=partition))
            )

        for n, (partition, writes) in enumerate(groups):
            for key, value in writes:
                current = filling.get(partition)
                if current is None:
                    current = filling[partition] = _Open(producer.create_batch())
                if current.batch.append(key=key, value=value, timestamp=None) is None:
                    # Full: send it and start the next (a first record always fits).
                    await send(partition)
                    current = filling[partition] = _Open(producer.create_batch())
                    current.batch.append(key=key, value=value, timestamp=None)
                current.groups.add(n)
                current.writes.append((key, value))
        for partition in list(filling):
            await send(partition)
        confirmed = await asyncio.gather(*(d for *_, d in sent), return_exceptions=True)
        events: list[_Applied] = []
        for (partition, done, _), meta in zip(sent, confirmed, strict=True):
            if isinstance(meta, BaseException):
                if not isinstance(meta, Exception):
                    raise meta  # cancelled: the worker is stopping
                for n in done.groups:
                    results[n] = results[n] or meta
                continue
            # What the broker has is applied locally too, so the store and its
            # changelog agree (a refused group's items are parked).
            tp = TP(name, partition)
            events.extend(
                _Applied(_Message(tp, partition, meta.offset + i, key, value))
                for i, (key, value) in enumerate(done.writes)
            )
        self.table.data.apply_changelog_batch(events, to_key=_same, to_value=_same)
        return results
