"""What watermarks cost a decision, and a timer round with requests waiting.

A registration event of a source moves the partition's watermark of that source
(one point read, a write when it moves: docs/event-time.md). This decides
``--events`` registrations of distinct subjects in one partition (in memory,
pure ``decide``) under the shipped policy with and without ``event_time.sources``,
and times ``Waker.caught_up`` over a partition with ``--waiting`` requests
waiting of which ``--ready`` can be answered.
Run: .venv/bin/python bench/cutoff_bench.py
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from agents.rules.decide import decide
from agents.rules.policy import EventTimeSettings, Policy, load_policy
from agents.runtime.scheduler import Waker
from agents.store import keys
from agents.store.memory import MemoryStore
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.events import RecordRegistered
from streams.settings import REPO_ROOT

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def decisions_per_second(policy: Policy, events: int) -> float:
    store = MemoryStore()
    messages = [
        RecordRegistered(
            event_id=f"ev-{n}",
            subject_id=f"s-{n}",
            source_system="web-analytics",
            event_time=T0 + timedelta(milliseconds=n),
            record_id=f"visit-{n}",
            system="web-analytics",
            category=DataCategory.WEBSITE_VISITS,
            source=DataSource.OBSERVED,
            legal_basis=LegalBasis.LEGITIMATE_INTERESTS,
            purpose="fraud-prevention",
        )
        for n in range(events)
    ]
    now = T0 + timedelta(seconds=1)
    t0 = time.perf_counter()
    for message in messages:
        store.apply(0, decide(store.partition(0), message, now, policy).writes)
    return events / (time.perf_counter() - t0)


def caught_up_round_ms(sources: list[str], waiting: int, ready: int) -> float:
    store = MemoryStore()
    base = int(T0.timestamp() * 1000)
    writes: list[tuple[bytes, bytes | None]] = [
        (keys.waiting(base + n, f"s-{n}", "r-1"), b"") for n in range(waiting)
    ]
    writes += [(keys.watermark(s), keys.be64(base + ready - 1)) for s in sources]
    store.apply(0, writes)
    waker = Waker()
    t0 = time.perf_counter()
    found = waker.caught_up(store.partition(0), sources, base + 10**9)
    elapsed = time.perf_counter() - t0
    assert len(found) == ready, len(found)
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--ready", type=int, default=100)
    args = parser.parse_args()
    shipped = load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml")
    plain = shipped.model_copy(update={"event_time": EventTimeSettings(sources=[])})
    for name, policy in (("without watermarks", plain), ("with watermarks", shipped)):
        rate = decisions_per_second(policy, args.events)
        print(f"registration decisions/s {name}: {rate:,.0f}")
    ms = caught_up_round_ms(list(shipped.event_time.sources), args.waiting, args.ready)
    print(f"timer round, {args.ready} of {args.waiting:,} waiting requests ready: {ms:.2f} ms")


if __name__ == "__main__":
    main()
