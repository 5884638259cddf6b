"""The state store on a Faust table: RocksDB per partition, a changelog topic.

Writes use Faust's public API only: each write is sent to the table's changelog
topic (``Collection.changelog_topic``, ``Topic.as_future_message`` and
``publish_message``) in the subject's own partition; once the broker has
confirmed them all, they are applied to the local store with
``Store.apply_changelog_batch``, exactly as a standby replica
or a recovery applies the changelog (it also records the changelog offset, so
a restart recovers what came after). Nothing reads Faust's current-event
context. A crash between the two leaves the changelog ahead of the local store,
which recovery fixes.

Reads need a partition's RocksDB handle for range scans, which Faust exposes
only privately (``Store._db_for_partition``). This is the one place that uses
it; ``tests/unit/test_faust_store.py`` fails the day it changes meaning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from faust.types import TP

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


def _same(value: Any) -> Any:
    return value


class FaustStateStore:
    """``StateStore`` on a Faust table with raw bytes keys and values."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def entries(self, partition: int) -> RocksEntries:
        return RocksEntries(rocks_db(self.table, partition))

    def active_partitions(self) -> list[int]:
        """Partitions whose table this worker owns now (not standbys)."""
        topic = self.table.changelog_topic.get_topic_name()
        actives = self.table.app.assignor.assigned_actives()
        return sorted({tp.partition for tp in actives if tp.topic == topic})

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        topic = self.table.changelog_topic
        sent: list[tuple[int, int, bytes, bytes | None, Any]] = []
        for n, (partition, writes) in enumerate(groups):
            for key, value in writes:
                # Faust's own future (as the worker's outputs): Faust sets a
                # delivery error on it, and we await it.
                message = topic.as_future_message(
                    key=key,
                    value=value,
                    partition=partition,
                    key_serializer="raw",
                    value_serializer="raw",
                )
                await topic.publish_message(message)
                sent.append((n, partition, key, value, message))
        results: list[Exception | None] = [None] * len(groups)
        if not sent:
            return results
        confirmed = await asyncio.gather(*(m for *_, m in sent), return_exceptions=True)
        name = topic.get_topic_name()
        events: list[_Applied] = []
        for (n, partition, key, value, _), meta in zip(sent, confirmed, strict=True):
            if isinstance(meta, BaseException):
                if not isinstance(meta, Exception):
                    raise meta  # cancelled: the worker is stopping
                results[n] = results[n] or meta
                continue
            # What the broker has is applied locally too, so the store and its
            # changelog agree (a refused group's items are parked).
            events.append(
                _Applied(_Message(TP(name, partition), partition, meta.offset, key, value))
            )
        self.table.data.apply_changelog_batch(events, to_key=_same, to_value=_same)
        return results
