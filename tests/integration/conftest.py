"""Fixtures for integration tests: a real Kafka broker, fresh topics, fresh group ids.

- ``kafka_bootstrap`` (session, str): ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a
  testcontainers Kafka if a Docker engine answers; else a ``LocalKafka`` started
  for the session (see streams/connection.py).
- ``new_topic`` (factory): ``new_topic(prefix, partitions=1, config=None,
  *, replication_factor=-1) -> name``; uuid-suffixed, waited for, deleted after.
- ``group_id`` (str): a uuid consumer-group id.
- ``kafka_cluster3`` (session, LocalKafka): a 3-node cluster, started only if a
  test asks for it. Fault tests use ``kafka_cluster3_for_faults`` instead, which
  restarts whatever nodes the test stopped or killed.

Every test under tests/integration is marked ``integration`` automatically.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest
from confluent_kafka.admin import AdminClient

from streams.broker.admin import admin_client, create_topic, delete_topics
from streams.broker.launcher import LocalKafka
from streams.connection import KafkaEndpoint, kafka_for_tests

INTEGRATION_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, unit tests included: mark only ours.
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _session_name(kind: str) -> str:
    # Unique per session: several people (and CI) may run tests in one tree at once.
    return f"pytest-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_endpoint() -> Iterator[KafkaEndpoint]:
    with kafka_for_tests(name=_session_name("1")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_endpoint: KafkaEndpoint) -> str:
    return kafka_endpoint.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return admin_client(kafka_bootstrap)


class TopicFactory(Protocol):
    def __call__(
        self,
        prefix: str,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        replication_factor: int = -1,
    ) -> str: ...


@pytest.fixture
def new_topic(kafka_admin: AdminClient) -> Iterator[TopicFactory]:
    created: list[str] = []

    def make(
        prefix: str,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        replication_factor: int = -1,
    ) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topic(
            kafka_admin,
            name,
            partitions=partitions,
            replication_factor=replication_factor,
            config=config,
        )
        created.append(name)
        return name

    yield make
    delete_topics(kafka_admin, created)


@pytest.fixture
def group_id() -> str:
    return f"test-group-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def kafka_cluster3() -> Iterator[LocalKafka]:
    with LocalKafka(nodes=3, name=_session_name("3")) as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster3_for_faults(kafka_cluster3: LocalKafka) -> Iterator[LocalKafka]:
    """The 3-node cluster, with every node running again after the test."""
    yield kafka_cluster3
    for node_id in kafka_cluster3.node_ids:
        if node_id not in kafka_cluster3.running_node_ids():
            kafka_cluster3.start_node(node_id)
