"""Cost of the standing reconciliation with 10^6 scheduled entries, read from RocksDB.

The reconciliation (agents/runtime/reconcile.py) checks, every round, the timer
entries overdue by more than its bound and a slice of ``--per-round`` records
of the record sweep. This builds one partition holding ``--records`` stored
records (real ``RecordState`` JSON, due in the future: the normal case) and as
many timer entries, plus ``--overdue`` records and timer entries overdue, on a
RocksDB opened the way Faust opens a table partition, and measures:

* the CPU of one round (median and max over a full pass);
* how many rounds, and how long at the worker's 5 s interval, one full pass takes;
* that the pass found exactly the overdue records (the check is not free of errors
  because it is fast: it is asserted).

Run: .venv/bin/python bench/reconcile_bench.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from agents.rules.state import RecordState
from agents.runtime.reconcile import DEFAULT_PER_ROUND, Reconciler, RecordSweep
from agents.store import keys
from agents.store.codec import encode
from agents.store.faust_store import RocksEntries
from schemas.base import DataCategory, DataSource, LegalBasis

NOW = datetime(2026, 12, 1, tzinfo=UTC)
INTERVAL_S = 5.0


def _record(n: int, due: datetime) -> RecordState:
    return RecordState(
        record_id=f"rec-{n:08d}",
        system="billing",
        category=DataCategory.TRANSACTIONS,
        legal_basis=LegalBasis.LEGAL_OBLIGATION,
        source=DataSource.SUBJECT,
        purpose="billing",
        controller_id="smartcomms",
        provided_by_subject=True,
        registered_at=NOW - timedelta(days=400),
        generation=f"evt-{n:08d}",
        rule_id="N6.legal-obligation",
        due_at=due,
    )


def build(path: Path, records: int, overdue: int, subjects: int) -> Rdict:
    db = Rdict(str(path), options=Options(raw_mode=True))
    batch = WriteBatch(raw_mode=True)
    now_ms = int(NOW.timestamp() * 1000)
    for n in range(records + overdue):
        late = n >= records
        due = NOW - timedelta(hours=1) if late else NOW + timedelta(days=1 + n % 2500)
        subject = f"cust-{n % subjects:07d}"
        record = _record(n, due)
        batch.put(keys.keyed(keys.RECORD, subject, record.key), encode(record))
        batch.put(keys.timer(int(due.timestamp() * 1000) if late else now_ms + n + 1, subject), b"")
        if len(batch) >= 50_000:
            db.write(batch)
            batch = WriteBatch(raw_mode=True)
    db.write(batch)
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10**6)
    parser.add_argument("--overdue", type=int, default=50)
    parser.add_argument("--subjects", type=int, default=10**5)
    parser.add_argument("--per-round", type=int, default=DEFAULT_PER_ROUND)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        db = build(Path(tmp) / "p0", args.records, args.overdue, args.subjects)
        print(f"built {args.records + args.overdue:,} records in {time.perf_counter() - t0:.0f}s")
        entries = RocksEntries(db)
        reconciler = Reconciler(sweep=RecordSweep(per_round=args.per_round))
        now_ms = int(NOW.timestamp() * 1000)
        cpu: list[float] = []
        to_tick: dict[str, list[str]] = {}
        rounds = 0
        while True:
            c0 = time.process_time()
            found = reconciler.round({0: entries}, now_ms)
            cpu.append(time.process_time() - c0)
            rounds += 1
            to_tick.update(found.to_tick)
            if 0 in reconciler.sweep.passes:
                break
        named = sum(len(v) for v in to_tick.values())
        assert named == args.overdue, (named, args.overdue)
        [finding] = found.records.values()
        assert finding.count == args.overdue
        assert found.timers.count == args.overdue
        cpu.sort()
        total = args.records + args.overdue
        median_ms, max_ms = cpu[len(cpu) // 2] * 1000, cpu[-1] * 1000
        print(
            f"records {total:,}, timer entries {total:,}, per round {args.per_round:,} keys\n"
            f"  CPU per round: median {median_ms:.1f} ms, max {max_ms:.1f} ms\n"
            f"  full pass: {rounds} rounds, {sum(cpu):.2f} s CPU, "
            f"{rounds * INTERVAL_S / 60:.1f} min at one round per {INTERVAL_S:.0f} s\n"
            f"  found: {finding.count} overdue records, {found.timers.count} overdue timers"
        )
        db.close()


if __name__ == "__main__":
    main()
