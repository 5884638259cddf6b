"""The desk's read model on PostgreSQL (a throwaway server from Debian's packages).

The same store and queries as on SQLite (tests/unit/test_desk_readmodel.py):
migrations, projection, idempotent replay, forgetting, requests by deadline.
Skipped where no PostgreSQL server binaries are installed (.ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from agents.clock import FakeClock
from agents.rules.testing import Harness
from desk.readmodel import queries
from desk.readmodel import tables as t
from desk.readmodel.store import Store
from schemas.base import DataCategory
from schemas.events import ErasureRequested, LegalHoldPlaced
from streams.broker.ports import free_ports
from tests.unit.builders import NOTICE, register
from tests.unit.desk_topics import AUDIT_KEY, TOPICS, Recorder

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(args: list[str]) -> list[str]:
    # The server refuses to run as root; Debian's package brings a postgres user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing: .ci/run installs postgresql")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    workdir = Path(tempfile.mkdtemp(prefix="desk-pg-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    data = workdir / "data"
    port = free_ports(1)[0]
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "desk", "--auth=trust"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(workdir / "server.log")]
    subprocess.run(
        _as_postgres([*ctl, "-o", options, "-w", "start"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg://desk@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "fast", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    s = Store.open(postgres_url, topics=TOPICS, audit_key=AUDIT_KEY, clock=FakeClock(T0))
    with s.engine.begin() as conn:  # each test starts empty
        for table in reversed(t.metadata.sorted_tables):
            if table.name != "meta":
                conn.execute(table.delete())
    yield s
    s.close()


def test_the_read_model_on_postgresql(store: Store) -> None:
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), t.metadata) == []
    rec = Recorder()
    h = Harness(NOTICE, T0, subject_id="cust-pg")
    rec.decision(h, register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS))
    rec.send(
        h,
        h.event(
            LegalHoldPlaced,
            hold_id="hold-1",
            reason="r",
            case_reference="C",
            categories=[DataCategory.BILLING],
        ),
    )
    rec.send(h, h.event(ErasureRequested, request_id="erase-pg"))
    messages = rec.take()
    assert store.apply(messages).applied == len(messages)
    assert store.apply(messages).skipped == len(messages)  # idempotent

    now = T0 + timedelta(days=40)
    with store.engine.connect() as conn:
        view = queries.subject_view(conn, "cust-pg", store.ref("cust-pg"), now)
        rows = queries.requests_by_deadline(conn, now)
        chains = queries.audit_chains(conn)
    assert [r.record_id for r in view.records] == ["form-1"]
    assert [h["hold_id"] for h in view.holds] == ["hold-1"]
    assert view.timeline
    assert [(r.request_id, r.bucket) for r in rows] == [("erase-pg", "overdue")]
    assert [c.broken_offset for c in chains] == [None]

    store.apply([rec.add(TOPICS.state[0], b"cust-pg", None)])  # the worker forgets it
    with store.engine.connect() as conn:
        gone = queries.subject_view(conn, "cust-pg", store.ref("cust-pg"), now)
        left = queries.responses(conn, "cust-pg", "erase-pg")
    assert not gone.known
    assert gone.records == []
    assert left == []
