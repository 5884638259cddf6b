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

import agents
from agents.store.faust_store import FaustStateStore, rocks_db

REPO_AGENTS = Path(agents.__file__).parent


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeChangelog:
    """Records sends like a changelog topic; each send is confirmed at the next offset."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[int, bytes, bytes | None]] = []

    def get_topic_name(self) -> str:
        return self.name

    def as_future_message(
        self, *, key: bytes, value: bytes | None, partition: int, **_: Any
    ) -> asyncio.Future[_Meta]:
        self.sent.append((partition, key, value))
        future: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        future.set_result(_Meta(len(self.sent) - 1))
        return future

    async def publish_message(self, message: Any) -> None:
        pass


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Any]:
    app = faust.App("store-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = app.Table("subjects", partitions=2, key_type=bytes, value_type=bytes)
    table.changelog_topic = FakeChangelog("store-test-subjects-changelog")
    yield table
    table.data._dbs.clear()


def test_persist_applies_confirmed_writes_to_their_partition(table: Any) -> None:
    store = FaustStateStore(table)
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


def test_a_delete_is_a_tombstone_and_leaves_the_store(table: Any) -> None:
    store = FaustStateStore(table)
    asyncio.run(store.persist([(0, [(b"h\x00a", b"H")])]))
    asyncio.run(store.persist([(0, [(b"h\x00a", None)])]))
    assert store.entries(0).get(b"h\x00a") is None
    assert table.changelog_topic.sent[-1] == (0, b"h\x00a", None)


def test_scans_skip_fausts_own_offset_key(table: Any) -> None:
    store = FaustStateStore(table)
    asyncio.run(store.persist([(0, [(b"a", b"1"), (b"z", b"2")])]))
    assert [k for k, _ in store.entries(0).iterate(b"", b"\xff")] == [b"a", b"z"]
    assert rocks_db(table, 0).get(b"__faust\x00offset__") is not None


def test_the_one_private_faust_access_is_the_read_adapter() -> None:
    # The write path uses Faust's public API only; the current-event context is not used.
    sources = {p: p.read_text() for p in REPO_AGENTS.rglob("*.py")}
    assert not [p for p, text in sources.items() if "_current_event" in text]
    private = [p.name for p, text in sources.items() if "_db_for_partition" in text]
    assert private == ["faust_store.py"]
