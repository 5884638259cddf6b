"""The read protocol the rules see, and an overlay of pending writes on top of it.

``Entries`` is one partition's sorted key space, read-only: a point read and an
ascending range scan. A ``Layer`` holds writes not yet stored and answers
reads as if they were: a decision works on a layer over the batch's layer over
the store, and whatever a decision did not touch is read from below, never
copied. Scans are lazy, so a scan with a limit costs the limit, not the range.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol

from sortedcontainers import SortedList

Write = tuple[bytes, bytes | None]  # value None: delete


class Entries(Protocol):
    def get(self, key: bytes) -> bytes | None:
        """The value under ``key``, or None."""

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < stop``, in key order."""


def scan(entries: Entries, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
    return list(itertools.islice(entries.iterate(start, stop), max(0, limit)))


class Layer:
    """Writes over ``base``; reads see them. ``writes`` keeps first-write order."""

    def __init__(self, base: Entries) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}
        # The written keys in order, built at the first scan and kept up to date.
        self._sorted: SortedList | None = None

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._touch(key)
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self._touch(key)
        self.writes[key] = None

    def apply(self, writes: list[Write]) -> None:
        for key, value in writes:
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def _touch(self, key: bytes) -> None:
        if self._sorted is not None and key not in self.writes:
            self._sorted.add(key)

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self._sorted is None:
            self._sorted = SortedList(self.writes)
        pending = list(self._sorted.irange(start, stop, inclusive=(True, False)))
        if not pending:
            # Nothing written here in the range: the base's entries as they are
            # (decisions scan far more ranges than they write to).
            yield from self.base.iterate(start, stop)
            return
        i = 0
        for key, value in self.base.iterate(start, stop):
            while i < len(pending) and pending[i] < key:
                own = self.writes[pending[i]]
                if own is not None:
                    yield pending[i], own
                i += 1
            if key in self.writes:
                continue  # overwritten or deleted here: emitted (or not) from ``pending``
            yield key, value
        for key in pending[i:]:
            own = self.writes[key]
            if own is not None:
                yield key, own
