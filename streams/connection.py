"""Which Kafka to talk to: the one place that decides the bootstrap servers.

Order, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS`` in the environment (CI, staging, a broker you run).
2. Tests only: a Kafka container through testcontainers, when a Docker engine
   answers. No Docker engine exists on the project's own machines, so this
   branch is small and *untested here*; it exists for contributors who have one.
3. A local broker from the official jars: for the application, a running
   ``lifecycle kafka up`` cluster; for tests, a ``LocalKafka`` started for the
   session and stopped at its end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streams.broker import paths
from streams.broker.cluster_dirs import running_bootstrap
from streams.broker.errors import BrokerError
from streams.broker.launcher import LocalKafka
from streams.broker.paths import DEFAULT_CLUSTER_NAME

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
# "0" turns the Docker branch off even where an engine answers (e.g. to test
# exactly what CI runs); the image is overridable for the same reason.
TESTCONTAINERS_ENV = "LIFECYCLE_TESTCONTAINERS"
TESTCONTAINERS_IMAGE_ENV = "LIFECYCLE_TESTCONTAINERS_KAFKA_IMAGE"
# testcontainers' KafkaContainer drives Confluent's image; 7.9 runs Apache Kafka 3.9
# in KRaft mode. (The jar launcher runs 4.1; nothing here relies on 4.x features.)
DEFAULT_TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.9.0"

Source = Literal["env", "testcontainers", "local"]


@dataclass(frozen=True)
class KafkaEndpoint:
    bootstrap_servers: str
    source: Source
    # The cluster when we started one ourselves (source "local"), for fault tests.
    cluster: LocalKafka | None = None


def bootstrap_from_env() -> str | None:
    value = os.environ.get(BOOTSTRAP_ENV, "").strip()
    return value or None


def bootstrap_servers(cluster_name: str = DEFAULT_CLUSTER_NAME) -> str:
    """Bootstrap servers for the application: the env, else a running local cluster."""
    from_env = bootstrap_from_env()
    if from_env:
        return from_env
    local = running_bootstrap(paths.clusters_dir() / cluster_name)
    if local:
        return local
    raise BrokerError(
        f"no Kafka to connect to: set {BOOTSTRAP_ENV}=host:port, or start a local broker "
        f"with `lifecycle kafka up --name {cluster_name}`"
    )


def choose_test_source(docker_answers: Callable[[], bool]) -> Source:
    """The order for tests. ``docker_answers`` is only called when the env has no broker."""
    if bootstrap_from_env():
        return "env"
    if os.environ.get(TESTCONTAINERS_ENV, "1") != "0" and docker_answers():
        return "testcontainers"
    return "local"


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """True if a Docker engine responds to a ping within ``timeout`` seconds."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False  # the common case here: no engine, and no need to import docker
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        # No engine, no permission, wrong DOCKER_HOST: all mean "use something else".
        return False


@contextmanager
def kafka_for_tests(
    *, name: str | None = None, docker_answers: Callable[[], bool] = docker_engine_answers
) -> Iterator[KafkaEndpoint]:
    """A Kafka for a test session, following the order above; stopped on exit if we started it."""
    source = choose_test_source(docker_answers)
    if source == "env":
        yield KafkaEndpoint(str(bootstrap_from_env()), "env")
    elif source == "testcontainers":
        with _testcontainers_kafka() as bootstrap:
            yield KafkaEndpoint(bootstrap, "testcontainers")
    else:
        with LocalKafka(nodes=1, name=name) as cluster:
            yield KafkaEndpoint(cluster.bootstrap_servers, "local", cluster)


@contextmanager
def _testcontainers_kafka() -> Iterator[str]:  # pragma: no cover - no Docker engine here
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get(TESTCONTAINERS_IMAGE_ENV, DEFAULT_TESTCONTAINERS_IMAGE)
    container = KafkaContainer(image).with_kraft()
    # As with the local launcher: topics are created explicitly, never on first use.
    container.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    with container:
        yield container.get_bootstrap_server()
