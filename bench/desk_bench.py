"""Desk read model at 10^6 subjects: a subject lookup and the requests-by-deadline list.

Populates a SQLite read model directly (through the migrated schema, with the
dbapi connection for speed): ``--subjects`` subjects with two records each, a
legal hold on one in 100, an open request for one in 10 (due dates spread
over two months around now, one in 20 waiting for identity), an outstanding
command for one in 20 and three audit events each. Then it times the desk's
own queries (``desk.readmodel.queries``) on that file.

    .venv/bin/python bench/desk_bench.py                 # 10^6 subjects
    .venv/bin/python bench/desk_bench.py --subjects 10000

The file is kept (``--db``, default var/bench/desk-<n>.sqlite) and reused.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.clock import FakeClock
from desk.readmodel import queries
from desk.readmodel.store import Store
from desk.readmodel.topics import DeskTopics
from streams.settings import REPO_ROOT

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = b"bench-audit-key"
CHUNK = 20_000
TYPES = ["access", "erasure", "rectification", "restriction", "portability", "complaint"]


def ts(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME text format (UTC, naive), as the store writes it.
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def populate(path: Path, subjects: int, store: Store) -> None:
    rng = random.Random(13)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")

    def insert(sql: str, rows: Iterator[tuple[Any, ...]]) -> None:
        for batch in chunks(rows):
            db.executemany(sql, batch)
            db.commit()

    def sid(i: int) -> str:
        return f"cust-{i:07d}"

    at = ts(NOW - timedelta(days=30))
    insert(
        "INSERT INTO subjects VALUES (?, 0, NULL, NULL, ?)", ((sid(i), at) for i in range(subjects))
    )
    insert(
        "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,NULL,'held',?,?,'[]',?,NULL)",
        (
            (
                sid(i),
                system,
                f"{system}-{i}",
                cat,
                basis,
                "subject",
                "service-delivery",
                "smartcomms",
                rule,
                ts(NOW + timedelta(days=rng.randint(1, 3000))),
                at,
            )
            for i in range(subjects)
            for system, cat, basis, rule in (
                ("crm", "correspondence", "contract", "N6.contract"),
                ("call-recorder", "call_recording", "legitimate_interests", "N7.call-recordings"),
            )
        ),
    )
    insert(
        "INSERT INTO holds VALUES (?,?,?,?,?,?,?,?)",
        (
            (
                sid(i),
                f"hold-{i}",
                "dispute",
                f"CASE-{i}",
                '["call_recording"]',
                "[]",
                at,
                "smartcomms",
            )
            for i in range(0, subjects, 100)
        ),
    )

    def request(i: int) -> tuple[Any, ...]:
        received = NOW - timedelta(days=rng.uniform(0, 60))
        waiting = i % 200 == 0
        due = received + timedelta(days=31)
        return (
            sid(i),
            f"req-{i}",
            rng.choice(TYPES),
            "awaiting_identity" if waiting else rng.choice(["in_progress", "failed"]),
            "smartcomms",
            1,
            ts(received),
            None if waiting else ts(due),
            ts(due) if waiting else None,
            1 if waiting else 0,
            0,
            "[]",
            "[]",
            1,
            "[]",
            None,
        )

    insert(
        "INSERT INTO requests VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (request(i) for i in range(0, subjects, 10)),
    )
    insert(
        "INSERT INTO outstanding VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            (
                sid(i),
                f"cmd-{i}",
                "delete",
                "crm",
                "N9.erasure",
                None,
                1,
                at,
                at,
                i % 400 == 0,
                json.dumps([f"crm-{i}"]),
            )
            for i in range(0, subjects, 20)
        ),
    )
    insert(
        "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            (
                i % 12,
                (i // 12) * 3 + n,
                i * 3 + n,
                f"aud-{i}-{n}",
                store.ref(sid(i)),
                "smartcomms",
                "N7.call-recordings",
                "2024.1",
                decision,
                '["ev"]',
                "[]",
                at,
                ts(NOW - timedelta(days=30, seconds=-n)),
                '{"system":"crm"}',
                "0" * 64,
            )
            for i in range(subjects)
            for n, decision in enumerate(
                ("retention-scheduled", "retention-scheduled", "request-opened")
            )
        ),
    )
    db.execute("ANALYZE")
    db.commit()
    db.close()


def timed(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p95": samples[int(len(samples) * 0.95) - 1],
        "max": samples[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    path = args.db or REPO_ROOT / "var" / "bench" / f"desk-{args.subjects}.sqlite"
    fresh = not path.exists()
    topics = DeskTopics("bench", "bench-app")
    store = Store.open(f"sqlite:///{path}", topics=topics, audit_key=KEY, clock=FakeClock(NOW))
    if fresh:
        t0 = time.perf_counter()
        populate(path, args.subjects, store)
        print(f"populated {args.subjects:,} subjects in {time.perf_counter() - t0:.0f} s ({path})")
    rng = random.Random(7)
    with store.engine.connect() as conn:
        counts = {
            name: conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one()  # noqa: S608
            for name in ("subjects", "records", "requests", "outstanding", "audit")
        }
        print("rows:", ", ".join(f"{k} {v:,}" for k, v in counts.items()))

        def lookup() -> None:
            subject = f"cust-{rng.randrange(args.subjects):07d}"
            view = queries.subject_view(conn, subject, store.ref(subject), NOW)
            assert view.known
            assert len(view.records) == 2
            assert len(view.timeline) == 3

        cases: dict[str, Callable[[], Any]] = {
            "subject lookup (whole subject page)": lookup,
            "requests by deadline, first 100": lambda: queries.requests_by_deadline(
                conn, NOW, limit=100
            ),
            "requests by deadline, type=erasure": lambda: queries.requests_by_deadline(
                conn, NOW, queries.Filters(request_type="erasure"), limit=100
            ),
            "requests by deadline, overdue only": lambda: queries.requests_by_deadline(
                conn, NOW, queries.Filters(bucket="overdue"), limit=100
            ),
            "requests by deadline, awaiting identity": lambda: queries.requests_by_deadline(
                conn, NOW, queries.Filters(bucket="awaiting_identity"), limit=100
            ),
            "bucket counts (4 counts)": lambda: queries.bucket_counts(conn, NOW),
        }
        print(f"{'query':<42} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, fn in cases.items():
            fn()  # warm the page cache
            runs = args.runs if "counts" not in name else max(10, args.runs // 10)
            r = timed(fn, runs)
            print(f"{name:<42} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['max']:>8.2f}")
    store.close()


if __name__ == "__main__":
    main()
