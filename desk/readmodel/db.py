"""Engines and migrations: SQLite under ``var/`` by default, PostgreSQL by URL.

SQLite runs in WAL mode, so the web application reads while the projector
writes; the projector's transactions start with ``BEGIN IMMEDIATE`` (see
``writing``), so two projectors on one file take turns instead of failing
halfway. On PostgreSQL the projector takes a transaction-level advisory lock
for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
WRITER_LOCK = 0x6465736B  # "desk": the advisory lock key of projector transactions
IMMEDIATE = "desk_sqlite_immediate"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN (pysqlite's own is deferred-only).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A deleted row's bytes are overwritten, not left in a freed page: a
        # forgotten subject must leave the file too (N9.erasure-own-topics).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def scrub(engine: Engine) -> bool:
    """After deleting personal data: fold the write-ahead log into the database and
    truncate it, so the frames that still held the deleted rows leave the disk.
    True when done (or nothing to do: PostgreSQL, whose deleted rows stay in its
    files until VACUUM reuses the space, docs/own-data.md); False when readers
    kept the log busy past the busy timeout (try again later)."""
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # Outside any transaction (the connection is in autocommit mode).
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = cursor.fetchone()  # (busy, log frames, frames checkpointed)
        cursor.close()
    finally:
        raw.close()
    return row is not None and not row[0]


def writing(conn: Connection) -> Connection:
    """Mark ``conn`` (before ``begin``) as a projector writer: one at a time."""
    return conn.execution_options(**{IMMEDIATE: True})


def lock_writer(conn: Connection) -> None:
    """Inside a writer transaction: wait for other projectors (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK})


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = alembic_config()
    with writing(engine.connect()) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()
