"""Cost of one timer round with many subjects scheduled, read from RocksDB.

Due times live on disk (``d / be64(due) / subject`` entries, agents/store/keys.py);
a timer round range-scans each partition for entries due now. This measures
rounds that find ``--due`` subjects due among 10^4 and 10^6 scheduled, on a
RocksDB opened the way Faust opens a table partition, and the first round after
the database is reopened (what a restart or rebalance costs: nothing is
rebuilt). Run: .venv/bin/python bench/tick_bench.py
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from agents.runtime.scheduler import Waker
from agents.store import keys
from agents.store.faust_store import RocksEntries


def _open(path: Path) -> Rdict:
    return Rdict(str(path), options=Options(raw_mode=True))


def bench(scheduled: int, due_per_tick: int, ticks: int, directory: Path) -> dict[str, float]:
    rng = random.Random(42)
    now = 1_700_000_000_000
    horizon = 30 * 86_400_000
    db = _open(directory / f"t{scheduled}")
    batch = WriteBatch(raw_mode=True)
    for i in range(scheduled):
        # Scheduled items fall due after the measured ticks (30 days ahead at most).
        batch.put(keys.timer(now + rng.randrange(ticks * 1000 + 1, horizon), f"s-{i}"), b"")
    for t in range(ticks):
        for j in range(due_per_tick):
            batch.put(keys.timer(now + t * 1000, f"due-{t}-{j}"), b"")
    db.write(batch)
    entries = RocksEntries(db)
    waker = Waker()
    costs = []
    for t in range(ticks):
        t0 = time.perf_counter()
        fired = waker.due(entries, now + t * 1000)
        costs.append(time.perf_counter() - t0)
        assert len(fired) == due_per_tick, len(fired)
        # What each subject's decision does: its timer entry moves or goes.
        gone = WriteBatch(raw_mode=True)
        for subject_id, due_ms in fired:
            gone.delete(keys.timer(due_ms, subject_id))
        db.write(gone)
    idle = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        waker.due(entries, now - 1)
        idle.append(time.perf_counter() - t0)
    db.close()
    t0 = time.perf_counter()
    reopened = _open(directory / f"t{scheduled}")
    Waker().due(RocksEntries(reopened), now + ticks * 1000)
    first_round_s = time.perf_counter() - t0
    reopened.close()
    costs.sort()
    idle.sort()
    return {
        "first_round_s": first_round_s,
        "tick_median_us": costs[len(costs) // 2] * 1e6,
        "tick_p99_us": costs[int(len(costs) * 0.99) - 1] * 1e6,
        "idle_tick_median_us": idle[len(idle) // 2] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--due", type=int, default=100, help="subjects due per tick")
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    print(
        f"{'scheduled':>10} {'due/tick':>8} {'tick median':>12} {'tick p99':>10} "
        f"{'idle tick':>10} {'reopen + first round':>21}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for scheduled in (10**4, 10**6):
            r = bench(scheduled, args.due, args.ticks, Path(tmp))
            print(
                f"{scheduled:>10} {args.due:>8} {r['tick_median_us']:>10.0f}us "
                f"{r['tick_p99_us']:>8.0f}us {r['idle_tick_median_us']:>8.1f}us "
                f"{r['first_round_s']:>20.3f}s"
            )


if __name__ == "__main__":
    main()
