"""An in-memory state store with the worker's layout: for tests and benchmarks.

Each partition is a sorted map of bytes to bytes, so range scans cost what the
RocksDB store's do (a seek, then the entries read), and a subject holding a
million records is as cheap to touch here as one holding ten.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sortedcontainers import SortedDict

from agents.store.layer import Write


class MemoryPartition:
    def __init__(self) -> None:
        self.data: SortedDict = SortedDict()

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.data.get(key)
        return value

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in self.data.irange(start, stop, inclusive=(True, False)):
            yield key, self.data[key]

    def apply(self, writes: Iterable[Write]) -> None:
        for key, value in writes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def __len__(self) -> int:
        return len(self.data)


class MemoryStore:
    """Partitions of sorted entries; ``apply`` is what the worker's persist does."""

    def __init__(self) -> None:
        self.partitions: dict[int, MemoryPartition] = {}

    def partition(self, partition: int) -> MemoryPartition:
        if partition not in self.partitions:
            self.partitions[partition] = MemoryPartition()
        return self.partitions[partition]

    def apply(self, partition: int, writes: Iterable[Write]) -> None:
        self.partition(partition).apply(writes)


class MemoryStateStore(MemoryStore):
    """The worker's ``StateStore`` protocol in memory (handler tests, benchmarks)."""

    def entries(self, partition: int) -> MemoryPartition:
        return self.partition(partition)

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        for partition, writes in groups:
            self.apply(partition, writes)
        return [None] * len(groups)
