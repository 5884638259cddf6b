"""Cost of one timer tick with many items scheduled.

A tick pops only what is due. This measures ticks that find ``--due`` items
due among 10^4 and 10^6 scheduled, plus the one-off rebuild after a
rebalance. Run: .venv/bin/python bench/tick_bench.py
"""

from __future__ import annotations

import argparse
import random
import time

from agents.scheduler import DueIndex


def bench(scheduled: int, due_per_tick: int, ticks: int) -> dict[str, float]:
    rng = random.Random(42)
    now = 1_000_000_000
    horizon = 30 * 86_400_000
    # Scheduled items fall due after the measured ticks (30 days ahead at most).
    items = [
        (f"subject-{i}", now + rng.randrange(ticks * 1000 + 1, horizon)) for i in range(scheduled)
    ]
    index = DueIndex()
    t0 = time.perf_counter()
    index.rebuild(items)
    rebuild_s = time.perf_counter() - t0
    # Make exactly `due_per_tick` items due at each of the next ticks.
    for t in range(ticks):
        for j in range(due_per_tick):
            index.set(f"due-{t}-{j}", now + t * 1000)
    costs = []
    for t in range(ticks):
        t0 = time.perf_counter()
        fired = index.pop_due(now + t * 1000)
        costs.append(time.perf_counter() - t0)
        assert len(fired) == due_per_tick, len(fired)
        for subject_id, _ in fired:
            # What the agent does once the tick is processed: nothing more due.
            index.set(subject_id, None)
    idle = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        index.pop_due(now - 1)
        idle.append(time.perf_counter() - t0)
    costs.sort()
    idle.sort()
    return {
        "rebuild_s": rebuild_s,
        "tick_median_us": costs[len(costs) // 2] * 1e6,
        "tick_p99_us": costs[int(len(costs) * 0.99) - 1] * 1e6,
        "idle_tick_median_us": idle[len(idle) // 2] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--due", type=int, default=100, help="items due per tick")
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    print(
        f"{'scheduled':>10} {'due/tick':>8} {'tick median':>12} {'tick p99':>10} "
        f"{'idle tick':>10} {'rebuild':>9}"
    )
    for scheduled in (10**4, 10**6):
        r = bench(scheduled, args.due, args.ticks)
        print(
            f"{scheduled:>10} {args.due:>8} {r['tick_median_us']:>10.0f}us "
            f"{r['tick_p99_us']:>8.0f}us {r['idle_tick_median_us']:>8.1f}us "
            f"{r['rebuild_s']:>8.2f}s"
        )


if __name__ == "__main__":
    main()
