"""Erasures re-applied after a downstream restore, end to end (N9.erasure-replay).

A real worker and reference downstream consumers on the test broker. The CRM
holds a subject's data; a backup of it is taken; the subject is erased (the
CRM deletes, the worker writes the erasure ledger); the CRM is restored from
the backup (data and idempotency records come back), announces it with a
``SystemRestored`` event, and the replay cleans it again under the original
command ids, with the audit naming the replay. Then the same once more with
``lifecycle erasures replay``.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agents.runtime.replayer import ErasureReplayer, RestoreListener
from agents.runtime.replayer_metrics import ReplayerMetrics
from agents.tools.downstream import ReferenceStore
from schemas.audit import AuditEvent
from schemas.base import DataCategory
from schemas.commands import Action, Command
from schemas.events import ErasureRequested
from schemas.internal import ErasureLedgerEntry
from streams.publisher import Publisher
from tests.integration.events import desk_request, registered
from tests.integration.pipeline import LIFECYCLE, Pipeline, pipelines, wait_for

SUBJECT = "cust-restore-1"
OTHER = "cust-restore-2"


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    for pipeline in pipelines(kafka_bootstrap, tmp_path):
        pipeline.start()
        yield pipeline


def _deletes(pipeline: Pipeline, subject: str) -> list[Command]:
    return [
        c
        for c in pipeline.models(pipeline.names.command("crm"), Command)
        if c.subject_id == subject and c.action is Action.DELETE
    ]


def test_a_restored_system_is_cleaned_again_with_the_same_command_ids(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    crm = ReferenceStore(tmp_path / "crm-store.sqlite")
    for system in pipeline.policy.systems:
        pipeline.run_downstream(system.id, store=crm if system.id == "crm" else None)
    for subject in (SUBJECT, OTHER):
        for record in ("lead-1", "letter-1"):
            pipeline.publish(
                registered(subject, f"{subject}-{record}", "crm", DataCategory.CORRESPONDENCE)
            )
            crm.hold(subject, f"{subject}-{record}", f"Ann Example's {record}, 07700 900123")
    wait_for(lambda: len(pipeline.read(pipeline.names.audit)) >= 4, 60, "records registered")
    backup = tmp_path / "crm-backup.sqlite"
    taken_at = datetime.now(UTC)
    crm.snapshot(backup, taken_at)

    pipeline.publish(desk_request(ErasureRequested, SUBJECT, "req-erase-1", event_id="ev-er-1"))
    wait_for(lambda: crm.held(SUBJECT) == {}, 60, "the CRM deletes the subject's data")
    [ledger] = pipeline.wait_for_models(
        pipeline.names.erasure_ledger,
        ErasureLedgerEntry,
        lambda es: any(e.system == "crm" and e.subject_id == SUBJECT for e in es),
        what="the deletion in the erasure ledger",
    )
    [original] = _deletes(pipeline, SUBJECT)
    assert ledger.command_id == original.command_id
    assert sorted(ledger.record_ids) == [f"{SUBJECT}-lead-1", f"{SUBJECT}-letter-1"]

    # The CRM is restored from the backup: the erased data is back.
    assert crm.restore(backup) == taken_at
    assert len(crm.held(SUBJECT)) == 2

    replayer = ErasureReplayer(
        pipeline.bootstrap, pipeline.settings, clock=_Clock(), clock_margin=timedelta(0)
    )
    registry = CollectorRegistry()
    listener = RestoreListener(
        replayer,
        group_id=f"{pipeline.prefix}.replayer",
        metrics=ReplayerMetrics.create(registry),
    )
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        with Publisher(pipeline.bootstrap, pipeline.settings) as publisher:
            publisher.publish_restored("crm", taken_at, restore_id="restore-crm-1")
        wait_for(lambda: crm.held(SUBJECT) == {}, 60, "the replay deletes the data again")
    finally:
        listener.stop()
        thread.join(30)
    # Nobody else's data was touched.
    assert len(crm.held(OTHER)) == 2
    [report] = listener.reports
    assert (report.entries, report.records, report.subjects) == (1, 2, 1)
    # What SREs see: one restore of the CRM, one DELETE of two records re-sent.
    for name, value in (
        ("lifecycle_replayer_restores_total", 1),
        ("lifecycle_replayer_deletions_resent_total", 1),
        ("lifecycle_replayer_records_resent_total", 2),
    ):
        assert registry.get_sample_value(name, {"system": "crm"}) == value
    # Sent again under the original id, marked as a replay of this restore.
    resent = [c for c in _deletes(pipeline, SUBJECT) if c.parameters]
    assert [c.command_id for c in resent] == [original.command_id]
    assert resent[0].parameters == {"replay-of": "restore-crm-1"}
    replayed = pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(e.decision == "erasure-replayed" for e in es),
        what="the replay in the audit trail",
    )
    [audit] = [e for e in replayed if e.decision == "erasure-replayed"]
    assert audit.rule_id == "N9.erasure-replay"
    assert audit.command_ids_out == [original.command_id]
    assert audit.details["restore-id"] == "restore-crm-1"
    assert audit.details["system"] == "crm"
    # The acknowledgement of the replay closes it, and the ledger says when it was erased again.
    pipeline.wait_for_models(
        pipeline.names.erasure_ledger,
        ErasureLedgerEntry,
        lambda es: sum(e.command_id == original.command_id for e in es) >= 2,
        what="the replayed deletion confirmed in the ledger",
    )

    # A second restore of the same backup, replayed from the command line.
    crm.restore(backup)
    assert len(crm.held(SUBJECT)) == 2
    done = subprocess.run(
        [
            str(LIFECYCLE),
            "erasures",
            "replay",
            "--system",
            "crm",
            "--since",
            taken_at.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "--restore-id",
            "restore-crm-2",
        ],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "restore restore-crm-2: 1 deletion(s) of 2 record(s)" in done.stdout
    wait_for(lambda: crm.held(SUBJECT) == {}, 60, "the CLI replay deletes the data again")
    assert len(crm.held(OTHER)) == 2


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)
