"""The standing reconciliation: nothing is kept past its time without a reason on record.

The timer (``agents.runtime.scheduler``) acts on the due index; this checks the
promise from the other side, so that a deletion that slipped shows up by itself
(issue "No promise silently missed"), whatever made it slip: a tick lost in a
hand-over, a timer that stopped, a due-index entry that went missing.

Two checks per round, each bounded whatever the size of the state:

* **Timers.** ``d/`` entries (a subject's next wake-up) due more than ``bound``
  ago: the timer should have woken those subjects and their decision moved the
  entry. A range scan up to ``now - bound``, at most ``SCAN_LIMIT`` keys: with
  nothing overdue it reads no key at all, however many are scheduled.
* **Records.** Every record (``r/``) is visited by a cursor that walks each
  partition ``per_round`` keys at a time. A record is overdue when its deletion
  is due in the index (``agents.rules.context.record_due``: held by us, no legal
  hold on record, a due time) more than ``bound`` ago. A record with a DELETE
  outstanding (``deleting``), held under a legal hold (``held_by``) or deferred
  (its due time moved to the end of the wait) is not overdue: the reason is on
  record. A full pass over a partition gives that partition's figures; the
  gauges show the last full pass of every partition, so at 10^6 records they
  trail by one cycle (``docs/runbook.md``: LifecycleRecordsOverdue).

Each overdue record's subject is ticked again with the record named
(``DueTick.records``), and the decision restores the record's due-index entry
if it went missing (``agents.rules.retention.restore_due_index``) before the
usual sweep fires it. Requests past their deadline and commands past their
acknowledgement bound already have gauges and alerts of their own
(``lifecycle_requests_open{bucket="overdue"}``,
``lifecycle_command_oldest_outstanding_age_seconds``).

Values are read without pydantic: the check reads three fields of a stored
record's JSON, and a value it cannot read is left to the rules (which park an
unreadable record visibly when they meet it) and counted here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.store import keys
from agents.store.layer import Entries, scan
from schemas.internal import MAX_TICK_RECORDS

# Default bound past a due time before an item counts as overdue: a timer
# round (0.5 s), a tick's re-send (30 s), the catch-up wait after a hand-over
# (30 s) and a decision, with room to spare. Deferrals move the due time itself.
DEFAULT_BOUND_S = 90.0
# Record keys visited per round, over all partitions (a round every few seconds:
# about 10-20 ms of CPU, bench/reconcile_bench.py).
DEFAULT_PER_ROUND = 20_000
# Timer keys read per partition per round when many are overdue.
SCAN_LIMIT = 10_000
# Subjects re-ticked per round at most (the rest wait for the next round).
MAX_TICKS_PER_ROUND = 500
_RECORD_START = keys.RECORD + keys.SEP
_RECORD_STOP = keys.end_of(_RECORD_START)
_HELD = b'"status":"held"'
_DUE_AT = b'"due_at":"'


@dataclass(frozen=True)
class OverdueRecord:
    subject_id: str
    record_key: str  # system/record_id, as the subject's records are named


@dataclass
class Finding:
    """Overdue items of one kind: how many, and the earliest due time among them."""

    count: int = 0
    oldest_due_ms: int | None = None

    def add(self, due_ms: int) -> None:
        self.count += 1
        if self.oldest_due_ms is None or due_ms < self.oldest_due_ms:
            self.oldest_due_ms = due_ms

    def merge(self, other: Finding) -> None:
        self.count += other.count
        if other.oldest_due_ms is not None and (
            self.oldest_due_ms is None or other.oldest_due_ms < self.oldest_due_ms
        ):
            self.oldest_due_ms = other.oldest_due_ms


def _due_ms(raw: bytes) -> int | None:
    """The stored record's ``due_at`` in ms, read without decoding the whole value."""
    at = raw.find(_DUE_AT)
    if at < 0:
        return None  # "due_at":null, not scheduled
    start = at + len(_DUE_AT)
    text = raw[start : raw.index(b'"', start)].decode()
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def record_overdue(raw: bytes, deadline_ms: int) -> tuple[str, int] | None:
    """(rule id, due ms) when the stored record is due in the index before
    ``deadline_ms``; None otherwise. Raises ValueError on a value it cannot read."""
    if _HELD not in raw:  # deleting (a DELETE outstanding), or another format
        return None
    # Nearly every record is due in the future: that is decided on its due time
    # alone; only the few past the deadline are decoded in full.
    due = _due_ms(raw)
    if due is None or due >= deadline_ms:
        return None
    value = json.loads(raw)
    if value.get("status") != "held" or value.get("held_by"):
        return None
    return str(value.get("rule_id") or "unknown"), due


def timers_overdue(entries: Entries, deadline_ms: int, limit: int = SCAN_LIMIT) -> Finding:
    """Timer entries due before ``deadline_ms`` (at most ``limit`` read)."""
    found = Finding()
    start = keys.TIMER + keys.SEP
    for key, _ in scan(entries, start, start + keys.be64(deadline_ms), limit):
        found.add(keys.parse_timer(key)[0])
    return found


@dataclass
class RecordSweep:
    """Walks each partition's records ``per_round`` keys per round (shared by the
    partitions of a round), remembering each partition's last full pass."""

    per_round: int = DEFAULT_PER_ROUND
    # partition -> (next key, the pass in progress, unreadable values in it)
    _cursor: dict[int, tuple[bytes, dict[str, Finding], int]] = field(default_factory=dict)
    # partition -> (rule -> finding) of its last full pass
    passes: dict[int, dict[str, Finding]] = field(default_factory=dict)
    unreadable: dict[int, int] = field(default_factory=dict)

    def step(
        self, partition: int, entries: Entries, deadline_ms: int, budget: int
    ) -> tuple[list[OverdueRecord], int]:
        """Visit up to ``budget`` records of ``partition``; returns the overdue ones
        found and the keys read."""
        start, by_rule, bad = self._cursor.get(partition, (_RECORD_START, {}, 0))
        found: list[OverdueRecord] = []
        read = 0
        for key, raw in entries.iterate(start, _RECORD_STOP):
            if read >= budget:
                self._cursor[partition] = (key, by_rule, bad)
                return found, read
            read += 1
            try:
                hit = record_overdue(raw, deadline_ms)
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if hit is not None:
                subject_id, _, name = key[2:].partition(keys.SEP)
                rule_id, due_ms = hit
                by_rule.setdefault(rule_id, Finding()).add(due_ms)
                found.append(OverdueRecord(subject_id.decode(), name.decode()))
        # The pass is complete: it becomes the partition's figures.
        self.passes[partition] = by_rule
        self.unreadable[partition] = bad
        self._cursor.pop(partition, None)
        return found, read

    def keep_only(self, partitions: Iterable[int]) -> None:
        wanted = set(partitions)
        for table in (self._cursor, self.passes, self.unreadable):
            for p in [p for p in table if p not in wanted]:
                del table[p]

    def by_rule(self) -> dict[str, Finding]:
        total: dict[str, Finding] = {}
        for per_rule in self.passes.values():
            for rule_id, finding in per_rule.items():
                total.setdefault(rule_id, Finding()).merge(finding)
        return total


@dataclass(frozen=True)
class Round:
    """What one reconciliation round found, and which subjects to tick again."""

    timers: Finding
    records: dict[str, Finding]
    to_tick: dict[str, list[str]]  # subject id -> record keys to name in its tick
    keys_read: int
    unreadable: int = 0


@dataclass
class Reconciler:
    bound_ms: int = int(DEFAULT_BOUND_S * 1000)
    sweep: RecordSweep = field(default_factory=RecordSweep)

    def round(
        self, partitions: dict[int, Entries], now_ms: int, may_tick: set[int] | None = None
    ) -> Round:
        """Check ``partitions``; subjects to tick again only from ``may_tick`` (all
        when None): a partition just handed over is measured but left to its
        catch-up (``agents.runtime.catchup``) before anything acts on it."""
        deadline = now_ms - self.bound_ms
        timers = Finding()
        to_tick: dict[str, list[str]] = {}
        budget = self.sweep.per_round
        read = 0
        self.sweep.keep_only(partitions)
        ordered = sorted(partitions.items())
        for i, (partition, entries) in enumerate(ordered):
            timers.merge(timers_overdue(entries, deadline))
            # Each partition gets an even share of what is left of the budget.
            share = max(1, (budget - read) // (len(ordered) - i))
            found, n = self.sweep.step(partition, entries, deadline, share)
            read += n
            if may_tick is not None and partition not in may_tick:
                continue
            for record in found:
                named = to_tick.get(record.subject_id)
                if named is None:
                    if len(to_tick) >= MAX_TICKS_PER_ROUND:
                        continue
                    named = to_tick[record.subject_id] = []
                if len(named) < MAX_TICK_RECORDS:
                    named.append(record.record_key)
        unreadable = sum(self.sweep.unreadable.values())
        return Round(timers, self.sweep.by_rule(), to_tick, read, unreadable)


@dataclass(frozen=True)
class ReconcileMetrics:
    """The reconciliation's gauges and counters (names are part of the public surface)."""

    records_overdue: Gauge
    records_overdue_oldest: Gauge
    timers_overdue: Gauge
    timers_overdue_oldest: Gauge
    records_unreadable: Gauge
    rounds: Counter
    failed_rounds: Counter
    reticked: Counter
    timer_rounds: Counter
    timer_last_round: Gauge
    # Rules that had overdue records once: shown at 0 after they heal, not dropped.
    _rules: set[str] = field(default_factory=set, compare=False)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReconcileMetrics:
        r = registry
        return cls(
            records_overdue=Gauge(
                "lifecycle_records_overdue",
                "Records whose deletion was due more than the reconciliation bound ago "
                "with no DELETE sent and no reason on record, by retention rule "
                "(last full pass of each partition; the target is 0).",
                ["rule"],
                registry=r,
            ),
            records_overdue_oldest=Gauge(
                "lifecycle_records_overdue_oldest_seconds",
                "How long ago the oldest overdue record fell due, by retention rule.",
                ["rule"],
                registry=r,
            ),
            timers_overdue=Gauge(
                "lifecycle_timers_overdue",
                "Subjects whose wake-up is due more than the reconciliation bound ago.",
                registry=r,
            ),
            timers_overdue_oldest=Gauge(
                "lifecycle_timers_overdue_oldest_seconds",
                "How long ago the oldest overdue wake-up fell due (0 when none).",
                registry=r,
            ),
            records_unreadable=Gauge(
                "lifecycle_reconciliation_unreadable_records",
                "Stored records the reconciliation could not read (last full passes).",
                registry=r,
            ),
            rounds=Counter(
                "lifecycle_reconciliation_rounds_total",
                "Reconciliation rounds completed.",
                registry=r,
            ),
            failed_rounds=Counter(
                "lifecycle_reconciliation_failed_rounds_total",
                "Reconciliation rounds that failed (a store read during a rebalance); "
                "the next round tries again.",
                registry=r,
            ),
            reticked=Counter(
                "lifecycle_reconciliation_reticked_total",
                "Subjects the reconciliation woke again for an overdue record.",
                registry=r,
            ),
            timer_rounds=Counter(
                "lifecycle_timer_rounds_total",
                "Rounds of the due-subject timer completed (stops growing if it stops).",
                registry=r,
            ),
            timer_last_round=Gauge(
                "lifecycle_timer_last_round_timestamp_seconds",
                "When the due-subject timer last completed a round (Unix time).",
                registry=r,
            ),
        )

    def publish(self, found: Round, now_ms: int) -> None:
        self.timers_overdue.set(found.timers.count)
        self.timers_overdue_oldest.set(_age_s(found.timers.oldest_due_ms, now_ms))
        self._rules.update(found.records)
        for rule in self._rules:
            finding = found.records.get(rule, Finding())
            self.records_overdue.labels(rule).set(finding.count)
            self.records_overdue_oldest.labels(rule).set(_age_s(finding.oldest_due_ms, now_ms))
        self.records_unreadable.set(found.unreadable)
        self.rounds.inc()

    def declare(self, rules: Iterable[str]) -> None:
        """Series at 0 for the policy's retention rules, so the alert and the
        dashboard see them before anything is ever overdue."""
        self._rules.update(rules)
        for rule in self._rules:
            self.records_overdue.labels(rule).set(0)
            self.records_overdue_oldest.labels(rule).set(0)

    def timer_round_done(self, now_s: float) -> None:
        self.timer_rounds.inc()
        self.timer_last_round.set(now_s)


def _age_s(due_ms: int | None, now_ms: int) -> float:
    return 0.0 if due_ms is None else max(0.0, (now_ms - due_ms) / 1000)
