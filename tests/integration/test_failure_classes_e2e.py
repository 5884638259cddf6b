"""Permanent failures on the real broker: the worker parks the item and goes on.

The policy has two marketing systems, so one opt-out sends a SUPPRESS command
to each. After the worker has started, one command topic is deleted (a system
whose topic does not exist) and the other's ``max.message.bytes`` is cut below
a command's size (the broker refuses the record). Before this, either one
stopped the worker with exit 75 and the restarted worker replayed the same
event: a crash loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from schemas.audit import AuditEvent
from schemas.base import Channel
from schemas.deadletter import DeadLetter, FailureClass
from streams.broker.admin import delete_topics
from tests.integration.events import call_recorded, opted_out
from tests.integration.pipeline import (
    EXTRA_MARKETING_SYSTEM,
    NOTICE_POLICY,
    Pipeline,
    pipelines,
    run_desk,
    wait_decided,
    wait_for,
    with_second_marketing_system,
)

GONE = "marketing-platform"  # its command topic is deleted
SMALL = EXTRA_MARKETING_SYSTEM  # its command topic takes only tiny records


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    policy = with_second_marketing_system(NOTICE_POLICY, tmp_path)
    yield from pipelines(kafka_bootstrap, tmp_path, policy_path=policy)


def break_command_topics(pipeline: Pipeline) -> None:
    admin = AdminClient(pipeline.client_config)
    gone = pipeline.names.command(GONE)
    delete_topics(admin, [gone])
    wait_for(
        lambda: gone not in admin.list_topics(timeout=10).topics,
        30,
        f"{gone} deleted",
    )
    small = ConfigResource(
        ConfigResource.Type.TOPIC,
        pipeline.names.command(SMALL),
        incremental_configs=[
            ConfigEntry("max.message.bytes", "100", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([small]).values():
        future.result(timeout=30)


def test_commands_that_cannot_be_delivered_are_parked_and_the_worker_goes_on(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    break_command_topics(pipeline)
    subject = "cust-parked"
    opt_out = opted_out(subject, [Channel.ALL])
    pipeline.publish(opt_out)
    after = call_recorded(
        "cust-after", "rec-after", event_id="ev-after", when=datetime.now(UTC) - timedelta(days=1)
    )
    pipeline.publish(after)

    letters = pipeline.wait_for_models(
        pipeline.names.dead_letter,
        DeadLetter,
        lambda ds: len(ds) >= 2,
        what="both undeliverable commands parked",
    )
    source = pipeline.names.input("marketing")
    assert {(d.topic, d.failure_class) for d in letters} == {
        (source, FailureClass.UNKNOWN_TOPIC),
        (source, FailureClass.RECORD_TOO_LARGE),
    }
    assert {d.original_value for d in letters} == {pipeline.codec.encode(opt_out)}
    reasons = sorted(d.reason for d in letters)
    assert pipeline.names.command(GONE) in reasons[0] + reasons[1]
    assert pipeline.names.command(SMALL) in reasons[0] + reasons[1]

    # The opt-out itself was decided and audited, and the worker went on.
    audit = wait_decided(pipeline, [opt_out, after], "the opt-out and the event after it")
    assert any(opt_out.event_id in e.event_ids_in for e in audit if isinstance(e, AuditEvent))
    assert pipeline.process is not None
    assert pipeline.process.poll() is None
    assert (
        pipeline.metric_sum(
            "lifecycle_items_parked_total", topic=source, failure_class="unknown_topic"
        )
        == 1
    )
    assert (
        pipeline.metric_sum(
            "lifecycle_items_parked_total", topic=source, failure_class="record_too_large"
        )
        == 1
    )

    shown = run_desk(pipeline, "parked")
    assert shown.returncode == 0, shown.stderr
    assert "unknown_topic" in shown.stdout
    assert "record_too_large" in shown.stdout
    assert subject in shown.stdout
