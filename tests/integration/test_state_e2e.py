"""Subject state on the real worker and broker: generations end to end with the
reference downstream, and a deployment's previous-format state migrated in place."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from agents.store import keys
from agents.store.legacy import LegacySubjectState
from schemas.audit import AuditEvent
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.commands import Action, command_id
from tests.integration.events import call_recorded
from tests.integration.pipeline import (
    DEMO_POLICY,
    Pipeline,
    pipelines,
    subject_commands,
    wait_for,
)


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("state-e2e")
    yield from pipelines(kafka_bootstrap, workdir, policy_path=DEMO_POLICY)


def deletes(pipeline: Pipeline, subject: str) -> list[str]:
    """Distinct DELETE command ids sent to the call recorder for ``subject``, in order."""
    ids = [
        c.command_id
        for c in subject_commands(pipeline, "call-recorder", subject)
        if c.action is Action.DELETE
    ]
    return list(dict.fromkeys(ids))


def completed(pipeline: Pipeline, cid: str) -> bool:
    return any(
        e.decision == "command-completed" and cid in e.command_ids_out
        for e in pipeline.models(pipeline.names.audit, AuditEvent)
    )


def test_a_recording_registered_again_is_deleted_again_by_the_reference_downstream(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    recorder = pipeline.run_downstream("call-recorder")
    subject = "cust-gen-1"
    past = datetime.now(UTC) - timedelta(seconds=30)  # demo policy: recordings kept 20 s
    pipeline.publish(call_recorded(subject, "rec-1", when=past, event_id="ev-gen-1"))
    wait_for(lambda: len(deletes(pipeline, subject)) == 1, 60, "first DELETE")
    [first] = deletes(pipeline, subject)
    wait_for(lambda: completed(pipeline, first), 60, "first DELETE acknowledged")
    # The same recording id comes back (a restore, a re-import): a new generation.
    pipeline.publish(call_recorded(subject, "rec-1", when=past, event_id="ev-gen-2"))
    wait_for(lambda: len(deletes(pipeline, subject)) == 2, 60, "second DELETE")
    second = deletes(pipeline, subject)[1]
    assert second != first
    wait_for(lambda: completed(pipeline, second), 60, "second DELETE acknowledged")
    # The downstream carried out both: it did not answer the second from its memory of the first.
    assert recorder.store.recorded(first) is not None
    assert recorder.store.recorded(second) is not None
    assert recorder.store.count() == 2


def _format0_subject(subject: str, recorded: datetime) -> bytes:
    """A subject as the previous format stored it: one JSON value under its id."""
    state = LegacySubjectState.model_validate(
        {
            "subject_id": subject,
            "records": {
                "call-recorder/rec-old": {
                    "record_id": "rec-old",
                    "system": "call-recorder",
                    "category": DataCategory.CALL_RECORDING,
                    "legal_basis": LegalBasis.LEGITIMATE_INTERESTS,
                    "source": DataSource.OBSERVED,
                    "purpose": "training-security",
                    "controller_id": "smartcomms",
                    "provided_by_subject": False,
                    "registered_at": recorded,
                    "rule_id": "N7.call-recordings",
                    "due_at": recorded + timedelta(seconds=20),
                }
            },
            "processed_event_ids": ["ev-old-1"],
            "high_water": {"telephony": recorded},
        }
    )
    return state.model_dump_json().encode()


def test_a_previous_format_state_is_migrated_in_place_and_its_deletion_fires(
    pipeline: Pipeline,
) -> None:
    subject = "cust-migrated-1"
    changelog = f"{pipeline.prefix}-subjects-changelog"
    admin = AdminClient(pipeline.client_config)
    topic = NewTopic(
        changelog, num_partitions=pipeline.partitions, config={"cleanup.policy": "compact"}
    )
    admin.create_topics([topic])[changelog].result(30)
    # What the previous worker left in its table's changelog: nothing else is needed.
    recorded = datetime.now(UTC) - timedelta(seconds=60)
    pipeline.publish_raw(changelog, subject.encode(), _format0_subject(subject, recorded))
    pipeline.start()
    pipeline.run_downstream("call-recorder")
    wait_for(lambda: deletes(pipeline, subject) != [], 90, "the migrated recording's DELETE")
    # Its command id is the previous format's (no generation): acks in flight still match.
    assert deletes(pipeline, subject) == [
        command_id(
            action=Action.DELETE,
            system="call-recorder",
            subject_id=subject,
            rule_id="N7.call-recordings",
            record_ids=["rec-old"],
        )
    ]
    entries = pipeline.read_raw(changelog)
    latest = {key: value for _, _, key, value in entries}
    assert latest[subject.encode()] is None  # the previous-format value is gone
    assert latest.get(keys.header(subject)) is not None  # the subject's keyed header
