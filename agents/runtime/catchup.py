"""Timers wait until a partition's inputs are decided again after it changes hands.

A worker that dies after sending a decision's commands but before its state
and offsets are written leaves that decision to be taken again by the next
owner, from the same inputs, and the commands get the same ids. That holds
only if the inputs are decided again *before* the timer acts on the state they
would have changed: otherwise a recording erased by a request the old owner
had already answered (DELETE sent, state lost) falls due on the new owner
first and is deleted a second time under the retention rule's id, and the
replayed erasure then finds it gone (the chaos suite's "one command id per
record" check found exactly this).

So after every assignment, the timer (due ticks, watermark wake-ups and the
migration sweep) leaves a partition alone until the worker has decided, on
each of the partition's input topics (inputs, acknowledgements, erasure
replays; not its own ticks), every record that was there when the partition
was assigned: the end offsets read once the consumer has sought to its
committed offsets (that is, after state recovery), read outside Faust's
consumer (``agents.runtime.offsets``). A topic partition whose
committed offset (or log start) is already at its end has nothing to replay.
The wait is bounded by the backlog at assignment, not by traffic that keeps
arriving, and by ``MAX_WAIT_S`` of processing time after the partition was
armed: a topic whose last records are a transaction's commit marker has an
end offset no decided record reaches, and the records a dead owner acted on
are the first ones after the committed offset, decided long before that.
It also keeps the timer off a partition whose state is still being restored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]

# Longest the timer waits for a partition once armed (seconds, processing time).
MAX_WAIT_S = 30.0


@dataclass
class CatchUp:
    # Committed offsets the consumer sought to after the last assignment (None:
    # not sought yet, state recovery still running).
    _start: dict[TopicPartition, int] | None = None
    # partition -> offsets its topics must be decided up to (empty: caught up).
    _targets: dict[int, dict[TopicPartition, int]] = field(default_factory=dict)
    # topic partition -> the offset after the last record decided.
    _decided: dict[TopicPartition, int] = field(default_factory=dict)
    # partition -> when it was armed (processing time, seconds).
    _armed_at: dict[int, float] = field(default_factory=dict)

    def reset(self) -> None:
        """Partitions were revoked: everything waits for the next assignment's seek."""
        self._start = None
        self._targets.clear()
        self._decided.clear()
        self._armed_at.clear()

    def sought(self, committed: Mapping[TopicPartition, int | None]) -> None:
        """The consumer sought to ``committed`` (None or 0: read from the log start)."""
        self._start = {tp: offset or 0 for tp, offset in committed.items()}

    @property
    def recovering(self) -> bool:
        return self._start is None

    def decided(self, records: Iterable[tuple[str, int, int]]) -> None:
        """(topic, partition, offset) of records decided and stored."""
        for topic, partition, offset in records:
            tp = (topic, partition)
            if offset + 1 > self._decided.get(tp, -1):
                self._decided[tp] = offset + 1

    def armed(self, partition: int) -> bool:
        return partition in self._targets

    def arm(
        self,
        partition: int,
        ends: Mapping[TopicPartition, int],
        log_starts: Mapping[TopicPartition, int],
        now_s: float,
    ) -> None:
        """What the partition's topics held when the worker got it (their end offsets)."""
        self._armed_at[partition] = now_s
        start = self._start or {}
        self._targets[partition] = {
            tp: end
            for tp, end in ends.items()
            if end > max(start.get(tp, 0), log_starts.get(tp, 0))
        }

    def ready(self, partition: int, now_s: float) -> bool:
        """Whether the timer may act on ``partition`` (armed, and caught up or
        waited ``MAX_WAIT_S``)."""
        if self._start is None or partition not in self._targets:
            return False
        targets = self._targets[partition]
        if targets and now_s - self._armed_at[partition] >= MAX_WAIT_S:
            self._targets[partition] = targets = {}
        if targets:
            behind = {
                tp: end
                for tp, end in targets.items()
                if self._decided.get(tp, self._start.get(tp, 0)) < end
            }
            self._targets[partition] = targets = behind
        return not targets
