"""The state store on Faust's RocksDB table, without a broker.

``agents.store.faust_store`` reads a partition's RocksDB through Faust's
private ``Store._db_for_partition`` and writes the local store with the public
``Store.apply_changelog_batch``. These tests fail the day either changes
meaning in a Faust release: reads must see what was applied, in key order, in
the partition it was applied to, and the changelog offset must be recorded so
a restart recovers only what came after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP
from rocksdict import Rdict

import agents
from agents.store.faust_store import FaustStateStore, forget_deleted, rocks_db

REPO_AGENTS = Path(agents.__file__).parent


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeBatch:
    """Holds up to ``size`` records, like aiokafka's BatchBuilder (a first one always fits)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.records: list[tuple[bytes, bytes | None]] = []
        self.closed = False

    def append(self, *, key: bytes, value: bytes | None, timestamp: None) -> object | None:
        if self.closed or (self.records and len(self.records) >= self.size):
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Confirms each batch at the next offsets of one log; refuses partitions in ``refuse``."""

    def __init__(self, batch_size: int = 100) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[int, bytes, bytes | None]] = []
        self.batches: list[tuple[str, int, int]] = []  # topic, partition, records
        self.refuse: set[int] = set()

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_size)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        assert batch.closed, "a batch is closed before it is handed over"
        future: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        self.batches.append((topic, partition, len(batch.records)))
        if partition in self.refuse:
            future.set_exception(RuntimeError("refused"))
            return future
        future.set_result(_Meta(len(self.sent)))
        self.sent.extend((partition, k, v) for k, v in batch.records)
        return future


class FakeChangelog:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Any]:
    app = faust.App("store-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = app.Table("subjects", partitions=2, key_type=bytes, value_type=bytes)
    table.changelog_topic = FakeChangelog("store-test-subjects-changelog")
    yield table
    table.data._dbs.clear()


def test_persist_applies_confirmed_writes_to_their_partition(
    table: Any, producer: FakeProducer
) -> None:
    store = FaustStateStore(table, lambda: producer)
    results = asyncio.run(
        store.persist(
            [
                (0, [(b"r\x00a\x00x/2", b"two"), (b"r\x00a\x00x/1", b"one"), (b"h\x00a", b"H")]),
                (1, [(b"h\x00b", b"B")]),
            ]
        )
    )
    assert results == [None, None]
    zero, one = store.entries(0), store.entries(1)
    assert zero.get(b"h\x00a") == b"H"
    assert zero.get(b"h\x00b") is None  # each write lands in its own partition
    assert one.get(b"h\x00b") == b"B"
    # Range scans in key order, within the range only.
    assert list(zero.iterate(b"r\x00a\x00", b"r\x00a\x00\xff")) == [
        (b"r\x00a\x00x/1", b"one"),
        (b"r\x00a\x00x/2", b"two"),
    ]
    # The changelog offset is recorded, so recovery resumes after it.
    name = "store-test-subjects-changelog"
    assert table.data.persisted_offset(TP(name, 0)) == 2
    assert table.data.persisted_offset(TP(name, 1)) == 3
    # One record batch per partition, not one send per write.
    assert producer.batches == [(name, 0, 3), (name, 1, 1)]


def test_a_full_batch_is_sent_and_the_next_continues_at_the_right_offsets(table: Any) -> None:
    producer = FakeProducer(batch_size=2)
    store = FaustStateStore(table, lambda: producer)
    writes = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(5)]
    assert asyncio.run(store.persist([(0, writes)])) == [None]
    name = "store-test-subjects-changelog"
    assert producer.batches == [(name, 0, 2), (name, 0, 2), (name, 0, 1)]
    assert [(k, v) for _, k, v in producer.sent] == writes  # in order
    assert [store.entries(0).get(k) for k, _ in writes] == [v for _, v in writes]
    assert table.data.persisted_offset(TP(name, 0)) == 4


def test_a_refused_batch_fails_the_groups_in_it_only(table: Any, producer: FakeProducer) -> None:
    producer.refuse = {1}
    store = FaustStateStore(table, lambda: producer)
    results = asyncio.run(
        store.persist(
            [(0, [(b"h\x00a", b"A")]), (1, [(b"h\x00b", b"B")]), (0, [(b"h\x00c", b"C")])]
        )
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], RuntimeError)
    assert store.entries(0).get(b"h\x00c") == b"C"
    assert store.entries(1).get(b"h\x00b") is None  # not confirmed: not applied


def test_a_delete_is_a_tombstone_and_leaves_the_store(table: Any, producer: FakeProducer) -> None:
    store = FaustStateStore(table, lambda: producer)
    asyncio.run(store.persist([(0, [(b"h\x00a", b"H")])]))
    asyncio.run(store.persist([(0, [(b"h\x00a", None)])]))
    assert store.entries(0).get(b"h\x00a") is None
    assert producer.sent[-1] == (0, b"h\x00a", None)


def test_scans_skip_fausts_own_offset_key(table: Any, producer: FakeProducer) -> None:
    store = FaustStateStore(table, lambda: producer)
    asyncio.run(store.persist([(0, [(b"a", b"1"), (b"z", b"2")])]))
    assert [k for k, _ in store.entries(0).iterate(b"", b"\xff")] == [b"a", b"z"]
    assert rocks_db(table, 0).get(b"__faust\x00offset__") is not None


def test_the_one_private_faust_access_is_the_read_adapter() -> None:
    # Private Faust API is used in faust_store.py only (the read handle and the
    # producer's batch interface); the current-event context is not used.
    sources = {p: p.read_text() for p in REPO_AGENTS.rglob("*.py")}
    assert not [p for p, text in sources.items() if "_current_event" in text]
    for private in ("_db_for_partition", "_ensure_producer"):
        assert [p.name for p, text in sources.items() if private in text] == ["faust_store.py"]


def test_fausts_producer_offers_the_batch_interface(tmp_path: Path) -> None:
    # aiokafka_producer() relies on Faust's private producer accessor returning
    # aiokafka's producer, whose create_batch/send_batch persist uses.
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import Producer

    assert hasattr(Producer, "_ensure_producer")
    assert callable(AIOKafkaProducer.create_batch)
    assert callable(AIOKafkaProducer.send_batch)


def _files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_forget_deleted_leaves_no_deleted_value_in_the_stores_files(tmp_path: Path) -> None:
    # N9.erasure-own-topics: a deleted value stays in RocksDB's log and sorted files
    # until a compaction meets its tombstone; the worker compacts on a timer.
    needle = b"ann.forget@example.com"
    db = Rdict(str(tmp_path / "db"))
    try:
        db[b"s\x00cust-1"] = b"email=" + needle
        db[b"s\x00cust-2"] = b"someone else"
        db.flush()  # now in a sorted file, as a long-held value is
        del db[b"s\x00cust-1"]
        db.flush()
        assert _files_holding(tmp_path, needle), "a delete alone leaves the value on disk"
        forget_deleted(db)
        assert _files_holding(tmp_path, needle) == []
        assert db.get(b"s\x00cust-2") == b"someone else"
    finally:
        db.close()
