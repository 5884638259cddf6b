"""Waking subjects whose time has come, straight from the store.

Due times live on disk: every subject with something due has one timer entry
``d / be64(due) / subject`` in its partition (``agents.store.keys``), kept by
each decision. The worker's timer range-scans each partition it owns for
entries due at or before now and sends each such subject a ``DueTick``, so
its cost grows with what is due, and nothing is rebuilt after a rebalance or a
restart: the first scan after recovery reads the same entries.

A subject is ticked at most once per ``RECHECK_AFTER_MS`` while its entry stays
due at the same time (its decision normally moves the entry at once; if the tick
was lost, it is sent again). An entry that moved to another due time was decided
since, so it is ticked as soon as the new time comes: a subject with several
deletions a few seconds apart is not held back by its previous tick.
``Waker.caught_up`` finds subjects whose requests wait for the partition's
watermarks and can now be answered (``agents.rules.cutoff``).
``legacy_subjects`` finds subjects still stored in the previous format, so the
migration sweep ticks them once (docs/deployment.md). After an assignment the
worker's timer leaves a partition alone until the inputs it held then are
decided again (``agents.runtime.catchup``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agents.store import keys
from agents.store.layer import Entries, scan
from schemas.internal import MAX_TICK_RECORDS

# A ticked subject is ticked again after this long if its entry is still due.
RECHECK_AFTER_MS = 30_000
# Keys read per partition per round (a backlog is worked through over rounds).
SCAN_LIMIT = 10_000
# What a tick is remembered by besides a timer entry's due time (which is >= 0).
LEGACY = -1
CAUGHT_UP = -2
# Deferred deletions are remembered by -(due ms) - 3 (below the other markers).
_DEFERRED_BASE = -3


@dataclass
class Waker:
    """Which subjects to tick now, remembering the ones ticked recently."""

    # (subject, due ms of the entry ticked, or LEGACY / CAUGHT_UP) -> when it was ticked
    _ticked: dict[tuple[str, int], int] = field(default_factory=dict)
    _forgot_at: int = 0

    def due(self, entries: Entries, now_ms: int, limit: int = SCAN_LIMIT) -> list[tuple[str, int]]:
        """(subject id, due ms) of subjects due at or before ``now_ms`` not ticked lately."""
        self._forget(now_ms)
        start = keys.TIMER + keys.SEP
        stop = start + keys.be64(now_ms + 1)
        out: list[tuple[str, int]] = []
        for n, (key, _) in enumerate(entries.iterate(start, stop)):
            if n >= limit:
                break
            due_ms, subject_id = keys.parse_timer(key)
            if self._should_tick(subject_id, due_ms, now_ms):
                out.append((subject_id, due_ms))
        return out

    def caught_up(
        self,
        entries: Entries,
        sources: Sequence[str],
        now_ms: int,
        limit: int = SCAN_LIMIT,
    ) -> list[str]:
        """Subjects with a request waiting for watermarks that every source in this
        partition has now passed (``agents.rules.cutoff``), not ticked lately. Reads
        one key per source and the waiting entries up to the slowest watermark."""
        self._forget(now_ms)
        slowest = slowest_watermark(entries, sources)
        if slowest is None:
            return []
        start = keys.WAITING + keys.SEP
        out: list[str] = []
        for key, _ in scan(entries, start, start + keys.be64(slowest + 1), limit):
            subject_id = keys.parse_waiting(key)[1]
            if subject_id not in out and self._should_tick(subject_id, CAUGHT_UP, now_ms):
                out.append(subject_id)
        return out

    def deferred(
        self,
        entries: Entries,
        sources: Sequence[str],
        now_ms: int,
        limit: int = SCAN_LIMIT,
    ) -> list[tuple[str, int, list[str]]]:
        """(subject, due ms, record keys) of deletions deferred until the contract
        ``sources`` passed their due time, which every one of them now has in this
        partition (``agents.rules.retention.wake_deferred``). Reads one key per source
        and the deferral entries up to the slowest watermark."""
        self._forget(now_ms)
        slowest = slowest_watermark(entries, sources)
        if slowest is None:
            return []
        start = keys.DEFERRED + keys.SEP
        found: dict[tuple[str, int], list[str]] = {}
        for key, _ in scan(entries, start, start + keys.be64(slowest + 1), limit):
            due_ms, subject_id, record_key = keys.parse_deferred(key)
            found.setdefault((subject_id, due_ms), []).append(record_key)
        out: list[tuple[str, int, list[str]]] = []
        for (subject_id, due_ms), records in found.items():
            if self._should_tick(subject_id, _DEFERRED_BASE - due_ms, now_ms):
                out.extend(
                    (subject_id, due_ms, records[i : i + MAX_TICK_RECORDS])
                    for i in range(0, len(records), MAX_TICK_RECORDS)
                )
        return out

    def legacy(self, entries: Entries, now_ms: int, limit: int = SCAN_LIMIT) -> list[str]:
        """Subjects still stored in the previous format, not ticked lately."""
        self._forget(now_ms)
        return [s for s in legacy_subjects(entries, limit) if self._should_tick(s, LEGACY, now_ms)]

    def clear(self) -> None:
        self._ticked.clear()
        self._forgot_at = 0

    def _should_tick(self, subject_id: str, due_ms: int, now_ms: int) -> bool:
        if (subject_id, due_ms) in self._ticked:
            return False  # its tick for this very entry (or reason) is on its way
        self._ticked[(subject_id, due_ms)] = now_ms
        return True

    def _forget(self, now_ms: int) -> None:
        if self._ticked:
            self._ticked = {
                k: at for k, at in self._ticked.items() if now_ms - at < RECHECK_AFTER_MS
            }


def slowest_watermark(entries: Entries, sources: Sequence[str]) -> int | None:
    """The partition's watermark of the slowest of ``sources`` (one key each); None
    when there are none, or one has never been seen."""
    marks = [entries.get(keys.watermark(s)) for s in sources]
    if not sources or any(m is None for m in marks):
        return None
    return min(keys.from_be64(m) for m in marks if m is not None)


def legacy_subjects(entries: Entries, limit: int) -> list[str]:
    """Subject ids stored under the previous format's keys (no NUL), skipping the
    namespaced keys a namespace at a time (a seek each), so this costs about the
    number of namespaces when nothing is left to migrate."""
    out: list[str] = []
    start = b""
    while len(out) < limit:
        found = next(iter(entries.iterate(start, b"\xff\xff")), None)
        if found is None:
            break
        key = found[0]
        if keys.is_legacy(key):
            out.append(key.decode())
            start = key + keys.SEP
        elif key[1:2] == keys.SEP:
            start = key[:1] + b"\x01"  # past this whole namespace
        else:
            start = key + keys.SEP
    return out


def open_requests(entries: Entries) -> Iterable[tuple[str, int]]:
    """(request type, due ms) of the partition's open requests (the metrics entries)."""
    start = keys.OPEN_REQUEST + keys.SEP
    for _key, value in entries.iterate(start, keys.end_of(start)):
        request_type, due_ms = json.loads(value)
        yield str(request_type), int(due_ms)


def outstanding_commands(entries: Entries) -> Iterable[tuple[str, int]]:
    """(system, first sent ms) of the partition's commands awaiting acknowledgement."""
    start = keys.OUTSTANDING + keys.SEP
    for _key, value in entries.iterate(start, keys.end_of(start)):
        system, sent_ms = value.decode().rsplit("|", 1)
        yield system, int(sent_ms)


@dataclass
class TimerCount:
    """Counts a partition's timer entries a slice per call (for a gauge), so no
    call reads more than ``per_call`` keys however many subjects are scheduled."""

    per_call: int = 50_000
    counts: dict[int, int] = field(default_factory=dict)
    _cursor: dict[int, tuple[bytes, int]] = field(default_factory=dict)

    def step(self, partition: int, entries: Entries) -> None:
        start, counted = self._cursor.get(partition, (keys.TIMER + keys.SEP, 0))
        stop = keys.end_of(keys.TIMER + keys.SEP)
        last = None
        n = 0
        for n, (key, _) in enumerate(entries.iterate(start, stop), start=1):
            last = key
            if n >= self.per_call:
                break
        if last is not None and n >= self.per_call:
            self._cursor[partition] = (last + b"\x00", counted + n)
            return
        self.counts[partition] = counted + n
        self._cursor.pop(partition, None)

    def keep_only(self, partitions: Iterable[int]) -> None:
        wanted = set(partitions)
        self.counts = {p: c for p, c in self.counts.items() if p in wanted}
        self._cursor = {p: c for p, c in self._cursor.items() if p in wanted}

    @property
    def total(self) -> int:
        return sum(self.counts.values())
