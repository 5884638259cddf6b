"""Per-subject state survives a worker restart (N1's suppression list must never be lost).

Opt-out, stop the worker (SIGTERM), start it again, then a list import tries to
re-add the person: still suppressed. Run twice: once keeping the worker's local
RocksDB directory, once deleting it, so that the state can only come back from
the table's changelog topic. The consumer group has committed past the opt-out,
so it is not replayed: exactly one ``marketing-suppressed`` entry proves that.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from schemas.audit import AuditEvent
from schemas.base import Channel, DataCategory, DataSource, LegalBasis
from schemas.commands import AckOutcome, Action, Command
from tests.integration.events import opted_out, registered
from tests.integration.pipeline import pipelines


@pytest.mark.parametrize("local_state", ["kept", "deleted"])
def test_suppression_list_survives_a_restart(
    kafka_bootstrap: str, tmp_path: Path, local_state: str
) -> None:
    for pipeline in pipelines(kafka_bootstrap, tmp_path):
        subject = f"cust-restore-{local_state}"
        pipeline.start()
        pipeline.run_downstream("marketing-platform")
        opt_out = opted_out(subject, [Channel.PHONE, Channel.EMAIL], source_system="privacy-desk")
        pipeline.publish(opt_out)
        pipeline.wait_for_models(
            pipeline.names.audit,
            AuditEvent,
            lambda es: any(
                e.decision == "command-completed" and e.details.get("outcome") == AckOutcome.DONE
                for e in es
            ),
            what="opt-out suppression acknowledged",
        )
        assert pipeline.stop() == 0
        if local_state == "deleted":
            assert pipeline.worker_data_dir.is_dir()
            shutil.rmtree(pipeline.worker_data_dir)

        pipeline.start()
        imported = registered(
            subject,
            "list-row-restore",
            "marketing-platform",
            DataCategory.PURCHASED_LIST,
            basis=LegalBasis.LEGITIMATE_INTERESTS,
            purpose="sales-marketing",
            source=DataSource.LIST_BROKER,
            source_system="marketing",
            event_id=f"ev-import-{subject}",
        )
        pipeline.publish(imported)
        # The same opt-out delivered again is recognised as already processed.
        pipeline.publish(opt_out)
        audit = pipeline.wait_for_models(
            pipeline.names.audit,
            AuditEvent,
            lambda es: {e.decision for e in es} >= {"re-add-suppressed", "duplicate-ignored"},
            what="re-add suppressed and the repeated opt-out ignored after the restart",
        )
        (re_add,) = [e for e in audit if e.decision == "re-add-suppressed"]
        assert imported.event_id in re_add.event_ids_in
        assert re_add.rule_id == "N1.re-add-suppressed"
        since = datetime.fromisoformat(re_add.details["suppressed-since"])
        assert abs(since - opt_out.event_time) < timedelta(milliseconds=1)  # Avro keeps ms
        (duplicate,) = [e for e in audit if e.decision == "duplicate-ignored"]
        assert opt_out.event_id in duplicate.event_ids_in
        # The opt-out itself was decided once, before the restart: not replayed.
        assert [e.decision for e in audit].count("marketing-suppressed") == 1

        commands = pipeline.wait_for_models(
            pipeline.names.command("marketing-platform"),
            Command,
            lambda cs: any(c.rule_id == "N1.re-add-suppressed" for c in cs),
            what="suppression re-sent for the imported row",
        )
        (again,) = [c for c in commands if c.rule_id == "N1.re-add-suppressed"]
        assert again.action is Action.SUPPRESS_MARKETING
        assert again.record_ids == ["list-row-restore"]
        assert again.parameters == {"channels": "email,phone"}
        assert again.command_id in re_add.command_ids_out
        assert pipeline.stop() == 0
