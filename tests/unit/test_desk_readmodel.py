"""The desk's read model on SQLite: projection, idempotence, forgetting, queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from agents.clock import FakeClock
from agents.rules.testing import Harness
from agents.store import keys
from agents.store.legacy import LegacySubjectState
from desk.readmodel import queries, state_projection
from desk.readmodel import tables as t
from desk.readmodel.store import Message, Store
from desk.readmodel.topics import DeskTopics, MissingTopics
from schemas.base import DataCategory, DocumentType, LegalBasis
from schemas.commands import Action, CommandAck
from schemas.events import (
    ComplaintReceived,
    ErasureRequested,
    IdentityEvidenceReceived,
    LegalHoldPlaced,
    PortabilityRequested,
)
from tests.unit.builders import NOTICE, register
from tests.unit.desk_topics import AUDIT_KEY, TOPICS, Recorder

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(
        f"sqlite:///{tmp_path / 'desk.sqlite'}", topics=TOPICS, audit_key=AUDIT_KEY, clock=clock
    )
    yield s
    s.close()


def subject(store: Store, subject_id: str, now: datetime = T0) -> queries.SubjectView:
    with store.engine.connect() as conn:
        return queries.subject_view(conn, subject_id, store.ref(subject_id), now)


def count(store: Store, table: t.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def customer(rec: Recorder, subject_id: str = "cust-1") -> Harness:
    h = Harness(NOTICE, T0, subject_id=subject_id)
    rec.decision(
        h,
        register(
            h,
            "form-1",
            "crm",
            DataCategory.FORMS_SURVEYS,
            "sales-enquiries",
            basis=LegalBasis.LEGITIMATE_INTERESTS,
        ),
    )
    rec.decision(
        h,
        register(
            h,
            "bill-1",
            "billing-db",
            DataCategory.BILLING,
            "billing-accounting",
            basis=LegalBasis.LEGAL_OBLIGATION,
        ),
    )
    return h


def test_migrations_create_exactly_the_declared_tables(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), t.metadata)
    assert diff == []


def test_a_subject_shows_what_the_worker_holds(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    rec.send(
        h,
        h.event(
            LegalHoldPlaced,
            hold_id="hold-1",
            reason="dispute",
            case_reference="C-9",
            categories=[DataCategory.BILLING],
        ),
    )
    rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    store.apply(rec.take())

    view = subject(store, "cust-1")
    assert view.known
    assert [(r.system, r.record_id) for r in view.records] == [
        ("billing-db", "bill-1"),
        ("crm", "form-1"),
    ]
    assert [h["hold_id"] for h in view.holds] == ["hold-1"]
    assert view.holds[0]["categories"] == ["billing"]
    (request,) = view.requests
    assert (request.request_id, request.request_type, request.is_open) == ("req-1", "erasure", True)
    assert request.due_at is not None
    assert request.bucket == "later"
    # The erasure's DELETE to the CRM is outstanding, and was seen on the command topic.
    deletes = [c for c in view.outstanding if c.action == Action.DELETE.value]
    assert [c.target_system for c in deletes] == ["crm"]
    # The timeline is the subject's audit trail, found by its pseudonym, newest first.
    assert view.timeline[0].decision in {"erasure-decided", "request-opened"}
    assert {e.decision for e in view.timeline} >= {"request-opened", "retention-scheduled"}


def test_a_later_state_replaces_the_subjects_rows(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    d = rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    store.apply(rec.take())
    (delete,) = [c for c in d.commands if c.target_system == "crm"]
    ack = CommandAck(
        command_id=delete.command_id, subject_id="cust-1", system="crm", outcome="done", acked_at=T0
    )
    rec.send(h, ack)
    store.apply(rec.take())

    view = subject(store, "cust-1")
    assert [r.record_id for r in view.records] == ["bill-1"]  # the CRM record is gone
    crm = [c for c in view.commands if c.command_id == delete.command_id]
    assert [c.outstanding for c in crm] == [False]
    assert [a.outcome for a in crm[0].acks] == ["done"]


def test_applying_twice_or_from_scratch_gives_the_same_model(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    rec = Recorder()
    h = customer(rec)
    rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    messages = rec.take()
    first = store.apply(messages[:4])
    rest = store.apply(messages)  # a replay overlapping what was applied
    assert first.applied == 4
    assert (rest.skipped, rest.applied) == (4, len(messages) - 4)
    assert store.apply(messages).applied == 0

    again = Store.open(
        f"sqlite:///{tmp_path / 'again.sqlite'}", topics=TOPICS, audit_key=AUDIT_KEY, clock=clock
    )
    again.apply(messages)
    for table in t.metadata.sorted_tables:
        if table.name in ("meta", "audit_chains", "subjects"):
            continue
        assert count(store, table) == count(again, table), table.name
    assert subject(store, "cust-1") == subject(again, "cust-1")
    assert store.next_offsets() == again.next_offsets()
    again.close()


def test_the_last_changelog_value_of_a_batch_wins(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    store.apply(rec.take())  # one batch with three states of the subject
    assert [r.request_id for r in subject(store, "cust-1").requests] == ["req-1"]


def test_requests_by_deadline_most_urgent_first_with_filters(store: Store) -> None:
    rec = Recorder()
    for n, offset in ((1, 0), (2, 20), (3, 10)):
        h = Harness(NOTICE, T0 + timedelta(days=offset), subject_id=f"cust-{n}")
        rec.decision(h, register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS))
        rec.send(h, h.event(ErasureRequested, request_id=f"erase-{n}"))  # open until acked
    h = Harness(NOTICE, T0, subject_id="cust-4")
    rec.send(h, h.event(ComplaintReceived, complaint_id="complaint-4", summary="late"))
    h = Harness(NOTICE, T0, subject_id="cust-5")
    rec.send(h, h.event(PortabilityRequested, request_id="port-5"))  # waits for identity
    store.apply(rec.take())

    now = T0 + timedelta(days=36)
    with store.engine.connect() as conn:
        rows = queries.requests_by_deadline(conn, now)
        assert [r.request_id for r in rows] == [
            "complaint-4",
            "erase-1",
            "erase-3",
            "erase-2",
            "port-5",
        ]
        assert [r.bucket for r in rows] == ["overdue", "overdue", "due_7d", "later", None]
        assert queries.bucket_counts(conn, now) == {
            "overdue": 2,
            "due_7d": 1,
            "later": 1,
            "awaiting_identity": 1,
        }
        erasures = queries.requests_by_deadline(conn, now, queries.Filters(request_type="erasure"))
        assert [r.request_id for r in erasures] == ["erase-1", "erase-3", "erase-2"]
        overdue = queries.requests_by_deadline(conn, now, queries.Filters(bucket="overdue"))
        assert [r.request_id for r in overdue] == ["complaint-4", "erase-1"]
        waiting = queries.requests_by_deadline(
            conn, now, queries.Filters(status="awaiting_identity")
        )
        assert [r.request_id for r in waiting] == ["port-5"]
        assert queries.requests_by_deadline(conn, now, limit=2)[-1].request_id == "erase-1"


def _portability_answered(rec: Recorder, h: Harness) -> None:
    rec.send(h, h.event(PortabilityRequested, request_id="port-1"))
    for evidence_id, kind, issued in (
        ("ev-pass", DocumentType.PASSPORT, None),
        ("ev-bill", DocumentType.UTILITY_BILL, date(2024, 2, 20)),
    ):
        d = rec.send(
            h,
            h.event(
                IdentityEvidenceReceived,
                request_id="port-1",
                evidence_id=evidence_id,
                document_type=kind,
                issued_on=issued,
            ),
        )
    for command in d.commands:
        rec.send(
            h,
            CommandAck(
                command_id=command.command_id,
                subject_id=h.subject_id,
                system=command.target_system,
                outcome="done",
                acked_at=T0,
                exported=[
                    {
                        "record_id": r,
                        "category": "forms_surveys",
                        "provided_by_subject": True,
                        "fields": {"name": "Jane Example"},
                    }
                    for r in command.record_ids
                ],
            ),
        )


def test_answers_keep_the_body_as_sent_and_acks_keep_no_exported_values(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    _portability_answered(rec, h)
    store.apply(rec.take())
    with store.engine.connect() as conn:
        view = queries.request_view(conn, "cust-1", "port-1", T0)
        acks = conn.execute(select(t.acks)).all()
    assert view.latest is not None
    assert view.latest.status == "completed"
    body = json.loads(view.latest.body_json)
    assert body["kind"] == "portability"
    assert "Jane Example" in body["json"]
    assert acks
    assert all("Jane Example" not in str(tuple(a)) for a in acks)


def test_a_completed_erasure_drops_the_bodies_of_earlier_answers(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    _portability_answered(rec, h)
    d = rec.send(h, h.event(ErasureRequested, request_id="erase-1"))
    for command in d.commands:
        rec.send(
            h,
            CommandAck(
                command_id=command.command_id,
                subject_id="cust-1",
                system=command.target_system,
                outcome="done",
                acked_at=T0,
            ),
        )
    store.apply(rec.take())
    with store.engine.connect() as conn:
        export = queries.request_view(conn, "cust-1", "port-1", T0).latest
        erasure = queries.request_view(conn, "cust-1", "erase-1", T0).latest
    assert erasure is not None
    assert erasure.status in ("completed", "partially_refused")
    assert export is not None
    assert export.body_json is None
    assert export.body_forgotten == "erasure erase-1"
    assert export.status == "completed"  # what was answered, and when, stays


def test_a_subject_the_worker_forgets_is_forgotten_here_too(store: Store, clock: FakeClock) -> None:
    rec = Recorder()
    h = customer(rec)
    rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    store.apply(rec.take())
    store.record_action(
        event_id="desk-1",
        kind="hold-placed",
        subject_id="cust-1",
        target_id="hold-1",
        actor="alice",
        published_at=T0,
    )
    late = [m for m in rec.log if m.topic == TOPICS.names.responses]
    # The worker deletes the subject's header (a tombstone on the changelog): it
    # keeps nothing on the subject any more.
    clock.advance(timedelta(minutes=1))
    store.apply([rec.add(TOPICS.state[0], keys.header("cust-1"), None)])

    assert not subject(store, "cust-1").known
    for table in (*t.STATE_TABLES, t.responses, t.commands, t.acks):
        with store.engine.connect() as conn:
            left = conn.execute(
                select(func.count()).select_from(table).where(table.c.subject_id == "cust-1")
            ).scalar_one()
        assert left == 0, table.name
    with store.engine.connect() as conn:
        (action,) = conn.execute(select(t.desk_actions)).all()
        forgotten = conn.execute(select(t.forgotten.c.subject_ref)).scalars().all()
    assert action.subject_id is None
    assert action.actor == "alice"
    assert forgotten == [store.ref("cust-1")]  # a pseudonym, not the id
    # An answer still in flight from before the forgetting is not stored afterwards.
    replayed = [Message(m.topic, m.partition, m.offset + 100, m.key, m.value) for m in late]
    store.apply(replayed)
    assert count(store, t.responses) == 0


def test_a_forgotten_subjects_data_leaves_the_database_files(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    """N9.erasure-own-topics for the desk: deleting rows is not enough, SQLite keeps
    deleted cells in freed pages and old write-ahead log frames until overwritten."""
    rec = Recorder()
    customer(rec, subject_id="cust-forget-zq81")
    store.apply(rec.take())

    def holding() -> list[str]:
        return sorted(
            p.name for p in tmp_path.iterdir() if p.is_file() and b"forget-zq81" in p.read_bytes()
        )

    assert holding()  # the scan can fail: the subject is in the database now
    clock.advance(timedelta(minutes=1))
    store.apply([rec.add(TOPICS.state[0], keys.header("cust-forget-zq81"), None)])
    assert not subject(store, "cust-forget-zq81").known
    assert holding() == []
    # Deleted cells are overwritten whatever SQLite's build default (some leave them).
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


def test_the_audit_chain_is_verified_as_it_is_read(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    store.apply(rec.take())
    with store.engine.connect() as conn:
        (chain,) = queries.audit_chains(conn)
    assert chain.broken_offset is None
    assert chain.checked == count(store, t.audit)

    rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    batch = rec.take()
    audit_topic = TOPICS.names.audit
    tampered = next(m for m in batch if m.topic == audit_topic)
    doctored = tampered.value.replace(b"req-1", b"req-2")
    assert doctored != tampered.value
    batch[batch.index(tampered)] = Message(tampered.topic, 0, tampered.offset, None, doctored)
    store.apply(batch)
    with store.engine.connect() as conn:
        (chain,) = queries.audit_chains(conn)
    assert chain.broken_offset == tampered.offset
    assert "hash does not match" in chain.broken_reason


def test_a_redelivered_audit_event_is_skipped_not_a_break(store: Store) -> None:
    rec = Recorder()
    customer(rec)
    batch = rec.take()
    audit = [m for m in batch if m.topic == TOPICS.names.audit]
    store.apply(batch)
    # The same record again at a later offset (a producer retry): no new fact.
    store.apply([rec.add(TOPICS.names.audit, None, audit[0].value)])
    with store.engine.connect() as conn:
        (chain,) = queries.audit_chains(conn)
    assert chain.broken_offset is None
    assert chain.duplicates == 1
    assert chain.checked == len(audit)


def test_a_desk_action_is_marked_decided_when_the_worker_audits_its_event(store: Store) -> None:
    rec = Recorder()
    h = customer(rec)
    store.apply(rec.take())
    event = h.event(LegalHoldPlaced, hold_id="hold-7", reason="litigation", case_reference="C-1")
    store.record_action(
        event_id=event.event_id,
        kind="hold-placed",
        subject_id="cust-1",
        target_id="hold-7",
        actor="alice",
        published_at=T0,
    )
    assert subject(store, "cust-1").actions[0].decided_at is None
    rec.send(h, event)
    store.apply(rec.take())
    view = subject(store, "cust-1")
    assert view.actions[0].decision == "hold-placed"
    assert [x["hold_id"] for x in view.holds] == ["hold-7"]


def test_unreadable_messages_are_noted_without_their_content(store: Store) -> None:
    rec = Recorder()
    secret = b'{"subject_id": "cust-1", "name": "Jane Example"}'
    result = store.apply(
        [
            rec.add(TOPICS.state[0], keys.header("cust-1"), secret),
            rec.add(TOPICS.names.responses, b"cust-1", b"\xc3\x01garbage"),
        ]
    )
    assert (result.applied, result.unreadable) == (0, 2)
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.unreadable)).all()
    assert len(rows) == 2
    assert all("Jane" not in r.reason for r in rows)
    assert store.next_offsets()[(TOPICS.names.responses, 0)] == 1  # moved past it


def test_a_new_projection_version_rebuilds_the_state_tables(
    store: Store, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    customer(rec)
    store.apply(rec.take())
    assert (TOPICS.state[0], 0) in store.next_offsets()
    monkeypatch.setattr(state_projection, "VERSION", "next-format/1")
    reopened = Store.open(
        f"sqlite:///{tmp_path / 'desk.sqlite'}", topics=TOPICS, audit_key=AUDIT_KEY, clock=clock
    )
    assert count(reopened, t.records) == 0
    offsets = reopened.next_offsets()
    assert (TOPICS.state[0], 0) not in offsets  # the changelog is read again
    assert (TOPICS.names.audit, 0) in offsets  # the public topics are not
    reopened.close()


def test_rows_older_than_their_topics_retention_are_purged(store: Store, clock: FakeClock) -> None:
    rec = Recorder()
    h = customer(rec)
    rec.send(h, h.event(ErasureRequested, request_id="req-1"))
    store.apply(rec.take())
    assert count(store, t.commands) > 0
    # Commands, acks, responses and dead letters may hold personal data: they are
    # kept as long as their topics (the policy's own-topics bound, 72 hours).
    clock.advance(timedelta(hours=71))
    assert store.purge(TOPICS.retention())["commands"] == 0
    clock.advance(timedelta(hours=2))
    dropped = store.purge(TOPICS.retention())
    assert dropped["commands"] > 0
    assert dropped["responses"] > 0
    assert count(store, t.commands) == 0
    assert count(store, t.responses) == 0
    assert count(store, t.audit) > 0  # the audit trail is kept for ever


def test_missing_changelog_names_the_app_id_setting() -> None:
    topics = DeskTopics(prefix="p", app_id="data-lifecycle")
    present = ["p.responses", "p.acks", "p.audit", "p.dead-letter", "other-subjects-changelog"]
    with pytest.raises(MissingTopics) as caught:
        topics.select(present)
    message = str(caught.value)
    assert "data-lifecycle-subjects-changelog" in message
    assert "LIFECYCLE_APP_ID" in message
    assert "other-subjects-changelog" in message
    ok = topics.select([*present, "data-lifecycle-subjects-changelog", "p.cmd.crm"])
    assert ok[-1] == "p.cmd.crm"


def test_a_subject_in_the_previous_format_is_shown_until_the_worker_converts_it(
    store: Store,
) -> None:
    h = customer(Recorder())
    snapshot = h.state
    assert snapshot is not None
    old = LegacySubjectState(subject_id="cust-1", records=snapshot.records)
    rec = Recorder()
    store.apply([rec.add(TOPICS.state[0], b"cust-1", old.model_dump_json().encode())])
    assert [r.record_id for r in subject(store, "cust-1").records] == ["bill-1", "form-1"]
    # The conversion writes the keyed entries, then deletes the old value: still shown.
    converted = [w for step in h.decisions for w in step.writes]
    store.apply(
        [
            *(rec.add(TOPICS.state[0], k, v) for k, v in converted),
            rec.add(TOPICS.state[0], b"cust-1", None),
        ]
    )
    view = subject(store, "cust-1")
    assert view.known
    assert [(r.record_id, r.status) for r in view.records] == [
        ("bill-1", "held"),
        ("form-1", "held"),
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (keys.watermark("web-analytics"), keys.be64(1_700_000_000_000)),
        (keys.waiting(1_700_000_000_000, "cust-1", "r-1"), b""),
        (keys.waiting(1_700_000_000_000, "cust-1", "r-1"), None),
    ],
)
def test_the_partitions_watermarks_and_waits_are_not_subject_rows(
    key: bytes, value: bytes | None
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert state_projection.apply("app-subjects-changelog", key, value, at) == []
