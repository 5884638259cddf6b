"""The standing reconciliation on the real worker and broker: a recording whose
timer was lost is still deleted, and the worker's metrics say what happened."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from agents.store import keys
from schemas.audit import AuditEvent
from schemas.commands import Action
from tests.integration.events import call_recorded
from tests.integration.pipeline import (
    DEMO_POLICY,
    Pipeline,
    pipelines,
    subject_commands,
    wait_decided,
    wait_for,
)

SUBJECT = "cust-lost-timer"


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("reconcile-e2e")
    yield from pipelines(
        kafka_bootstrap,
        workdir,
        policy_path=DEMO_POLICY,
        extra_env={"LIFECYCLE_RECONCILE_BOUND_S": "2", "LIFECYCLE_RECONCILE_INTERVAL_S": "1"},
    )


def lose_due_entries(data_dir: Path, subject: str) -> int:
    """Delete ``subject``'s due-index and timer entries from the stopped worker's
    RocksDB files, as a lost hand-over would leave them. Returns how many."""
    gone = 0
    for path in sorted(data_dir.rglob("subjects-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True))
        try:
            due = keys.subject_prefix(keys.DUE, subject)
            doomed = [k for k, _ in db.items(from_key=due) if k.startswith(due)]
            timer = keys.TIMER + keys.SEP
            doomed += [
                k
                for k, _ in db.items(from_key=timer)
                if k.startswith(timer) and keys.parse_timer(k)[1] == subject
            ]
            for key in doomed:
                db.delete(key)
            gone += len(doomed)
        finally:
            db.close()
    return gone


def test_a_recording_whose_timer_was_lost_is_deleted_by_the_reconciliation(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    # Demo policy: recordings kept 20 s. Registered now, due 20 s from now.
    event = call_recorded(SUBJECT, "rec-1", when=datetime.now(UTC), event_id="ev-lost-1")
    pipeline.publish(event)
    wait_decided(pipeline, [event], "recording registered")
    assert pipeline.stop() == 0

    assert lose_due_entries(pipeline.worker_data_dir, SUBJECT) >= 2  # index + timer

    pipeline.start()
    wait_for(
        lambda: any(
            c.action is Action.DELETE for c in subject_commands(pipeline, "call-recorder", SUBJECT)
        ),
        90,
        "the recording was never deleted",
    )
    decisions = [
        e.decision
        for e in pipeline.models(pipeline.names.audit, AuditEvent)
        if e.decision in ("overdue-found", "due-index-restored", "retention-delete")
    ]
    # The timer alone could not have deleted it: the finding and the repair came first.
    assert decisions[:3] == ["overdue-found", "due-index-restored", "retention-delete"]
    assert pipeline.metric_sum("lifecycle_reconciliation_reticked_total") >= 1
    wait_for(
        lambda: pipeline.metric_sum("lifecycle_records_overdue") == 0,
        30,
        "the overdue gauge did not return to 0 after the heal",
    )
    assert pipeline.metric_sum("lifecycle_timer_rounds_total") > 0
