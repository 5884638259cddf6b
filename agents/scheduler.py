"""In-memory index of when each subject next needs attention.

The durable truth is the ``due`` table (subject id -> due time in ms, written
in event context and restored from its changelog). This index is derived from
it: rebuilt once after each recovery, then kept current by every decision. A
tick pops only what is due, so its cost grows with the number of due items
(O(k log n)), not with the number scheduled.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

# A popped subject is re-armed this far ahead in case its tick is lost; the
# agent's decision on the tick replaces it with the real next due time.
RECHECK_AFTER_MS = 30_000


@dataclass
class DueIndex:
    _heap: list[tuple[int, str]] = field(default_factory=list)
    _due: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._due)

    def set(self, subject_id: str, due_ms: int | None) -> None:
        """Record the subject's next due time, or forget it (None)."""
        if due_ms is None:
            self._due.pop(subject_id, None)
            return
        if self._due.get(subject_id) == due_ms:
            return
        self._due[subject_id] = due_ms
        heapq.heappush(self._heap, (due_ms, subject_id))
        self._compact_if_bloated()

    def pop_due(self, now_ms: int, limit: int = 10_000) -> list[tuple[str, int]]:
        """Subjects due at or before ``now_ms``: (subject id, due ms), earliest first.

        Each popped subject is re-armed at ``now + RECHECK_AFTER_MS`` so that a
        lost tick is retried; the decision on the tick overrides it.
        """
        fired: list[tuple[str, int]] = []
        while self._heap and self._heap[0][0] <= now_ms and len(fired) < limit:
            due_ms, subject_id = heapq.heappop(self._heap)
            if self._due.get(subject_id) != due_ms:
                continue  # superseded entry (lazy deletion)
            fired.append((subject_id, due_ms))
        for subject_id, _ in fired:
            self.set(subject_id, now_ms + RECHECK_AFTER_MS)
        return fired

    def rebuild(self, items: Iterable[tuple[str, int]]) -> None:
        self._due = dict(items)
        self._heap = [(due, sid) for sid, due in self._due.items()]
        heapq.heapify(self._heap)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()

    def _compact_if_bloated(self) -> None:
        # Lazy deletion leaves stale heap entries; rebuild when they dominate.
        if len(self._heap) > 4 * len(self._due) + 1024:
            self.rebuild(list(self._due.items()))


@dataclass(frozen=True)
class ScheduleEntry:
    """What the worker needs to know about a subject without reading its state.

    Stored in the ``schedule`` table (small JSON) so that rebuilding the index
    after a rebalance reads a few bytes per subject, not whole states.
    """

    due_ms: int | None
    # (request type, due ms) of open requests; (system, sent ms) of commands
    # awaiting acknowledgement. For the deadline and outstanding metrics.
    requests: tuple[tuple[str, int], ...] = ()
    outstanding: tuple[tuple[str, int], ...] = ()

    @property
    def empty(self) -> bool:
        return self.due_ms is None and not self.requests and not self.outstanding

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"d": self.due_ms, "r": self.requests, "o": self.outstanding}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ScheduleEntry:
        raw = json.loads(blob)
        return cls(
            due_ms=raw["d"],
            requests=tuple((str(t), int(d)) for t, d in raw["r"]),
            outstanding=tuple((str(s), int(t)) for s, t in raw["o"]),
        )


@dataclass
class Schedule:
    """Due index plus the open work per subject, derived from the schedule table."""

    index: DueIndex = field(default_factory=DueIndex)
    open_work: dict[str, ScheduleEntry] = field(default_factory=dict)

    def update(self, subject_id: str, entry: ScheduleEntry | None) -> None:
        self.index.set(subject_id, None if entry is None else entry.due_ms)
        if entry is None or not (entry.requests or entry.outstanding):
            self.open_work.pop(subject_id, None)
        else:
            self.open_work[subject_id] = entry

    def rebuild(self, items: Iterable[tuple[str, ScheduleEntry]]) -> None:
        self.index.clear()
        self.open_work.clear()
        due: list[tuple[str, int]] = []
        for subject_id, entry in items:
            if entry.due_ms is not None:
                due.append((subject_id, entry.due_ms))
            if entry.requests or entry.outstanding:
                self.open_work[subject_id] = entry
        self.index.rebuild(due)

    def clear(self) -> None:
        self.index.clear()
        self.open_work.clear()
