"""Security settings reach every client: the worker end to end on a SASL/SCRAM broker.

A broker of its own (module-scoped): its only client listener is SASL_PLAINTEXT,
so any client that ignored ``LIFECYCLE_KAFKA_*`` (the worker's Faust clients, its
audit-chain reader, the downstream consumer, topic setup, the test's producer and
readers) could not connect, and the flow below could not complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from schemas.audit import AuditEvent
from schemas.commands import Action, Command
from streams.broker.launcher import LocalKafka
from tests.integration.events import call_recorded
from tests.integration.pipeline import Pipeline, pipelines, wait_for

ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex
WORKER_PASSWORD = "worker-" + uuid.uuid4().hex
MECHANISM = "SCRAM-SHA-256"


@pytest.fixture(scope="module")
def sasl_kafka() -> Iterator[LocalKafka]:
    name = f"pytest-sasl-{uuid.uuid4().hex[:8]}"
    users = {"admin": ADMIN_PASSWORD, "worker": WORKER_PASSWORD}
    with LocalKafka(nodes=1, name=name, scram_users=users, sasl_mechanism=MECHANISM) as kafka:
        yield kafka


@pytest.fixture
def pipeline(sasl_kafka: LocalKafka, tmp_path: Path) -> Iterator[Pipeline]:
    env = {
        "LIFECYCLE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LIFECYCLE_KAFKA_SASL_MECHANISM": MECHANISM,
        "LIFECYCLE_KAFKA_SASL_USERNAME": "worker",
        "LIFECYCLE_KAFKA_SASL_PASSWORD": WORKER_PASSWORD,
    }
    yield from pipelines(sasl_kafka.bootstrap_servers, tmp_path, extra_env=env)


def admin_errors(bootstrap: str, **security: str) -> tuple[AdminClient, list[KafkaError]]:
    errors: list[KafkaError] = []
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": errors.append, **security}
    )
    return admin, errors


def test_pipeline_clients_use_the_worker_credentials(pipeline: Pipeline) -> None:
    config = pipeline.client_config
    assert config["security.protocol"] == "sasl_plaintext"
    assert config["sasl.mechanism"] == MECHANISM
    assert config["sasl.username"] == "worker"
    assert pipeline.settings.security.sasl_password is not None
    assert pipeline.settings.security.sasl_password.get_secret_value() == WORKER_PASSWORD


def test_event_flows_end_to_end_over_sasl_scram(pipeline: Pipeline, sasl_kafka: LocalKafka) -> None:
    pipeline.start()
    pipeline.run_downstream("call-recorder")
    due = datetime.now(UTC) + timedelta(seconds=3)
    event = call_recorded(
        "cust-sasl", "rec-sasl-1", event_id="ev-sasl-1", when=due - timedelta(days=30)
    )
    pipeline.publish(event)

    commands = pipeline.wait_for_models(
        pipeline.names.command("call-recorder"),
        Command,
        lambda cs: any(c.action is Action.DELETE for c in cs),
        what="delete command for the recording",
    )
    assert commands[0].record_ids == [event.recording_id]
    pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(e.decision == "command-completed" for e in es),
        what="acknowledgement closing the command",
    )

    worker_log = pipeline.log_path.read_text(errors="replace")
    assert "[^Worker]: Ready" in worker_log  # the log read is the worker's
    assert WORKER_PASSWORD not in worker_log
    for node_id in sasl_kafka.node_ids:
        logs = layout_logs(sasl_kafka, node_id)
        assert logs, "the broker wrote no logs"
        for path in logs:
            text = path.read_text(errors="replace")
            assert WORKER_PASSWORD not in text, path
            assert ADMIN_PASSWORD not in text, path


def layout_logs(kafka: LocalKafka, node_id: int) -> list[Path]:
    return sorted(kafka.log_file(node_id).parent.glob("*.log"))


def test_wrong_password_is_refused(sasl_kafka: LocalKafka) -> None:
    bootstrap = sasl_kafka.bootstrap_servers
    good, _ = admin_errors(bootstrap, **sasl_kafka.client_config("worker"))
    assert sasl_kafka.node_ids == sorted(good.list_topics(timeout=30).brokers)

    wrong = {**sasl_kafka.client_config("worker"), "sasl.password": "not-" + WORKER_PASSWORD}
    bad, errors = admin_errors(bootstrap, **wrong)
    with pytest.raises(KafkaException):
        bad.list_topics(timeout=5)

    def refused() -> bool:
        bad.poll(0.2)
        return any(e.code() == KafkaError._AUTHENTICATION for e in errors)

    wait_for(refused, 30, f"no authentication error reported, only {errors}")
    assert WORKER_PASSWORD not in " ".join(str(e) for e in errors)


def test_plaintext_client_is_refused(sasl_kafka: LocalKafka) -> None:
    plain, _ = admin_errors(sasl_kafka.bootstrap_servers)
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
