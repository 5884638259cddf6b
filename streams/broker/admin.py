"""Small topic-admin helpers over confluent-kafka's AdminClient, for tests and tools."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# The documented `confluent_kafka.admin.NewTopic` is an implicit re-export that
# mypy --strict rejects; cimpl is where it is defined (and typed).
from confluent_kafka.cimpl import NewTopic

from streams.broker.errors import BrokerError
from streams.broker.probe import admin_config


def admin_client(bootstrap: str, client_config: Mapping[str, str] | None = None) -> AdminClient:
    """An admin client of a local cluster; ``client_config`` from ``LocalKafka.client_config()``."""
    return AdminClient(admin_config(bootstrap, client_config))


def create_topic(
    admin: AdminClient,
    name: str,
    *,
    partitions: int = 1,
    replication_factor: int = -1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``name`` and return once every partition has a leader.

    ``replication_factor=-1`` takes the broker's default.replication.factor.
    CreateTopics returning is not enough: metadata reaches the brokers a moment
    later, and a client asking in between is told the topic does not exist.
    """
    topic = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config=dict(config or {}),
    )
    futures = admin.create_topics([topic], request_timeout=timeout)
    futures[name].result(timeout=timeout)
    wait_for_leaders(admin, name, partitions, timeout=timeout)


def wait_for_leaders(admin: AdminClient, name: str, partitions: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(topic=name, timeout=timeout)
        found = metadata.topics.get(name)
        if (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"topic {name} has no leader for every partition after {timeout}s")
        time.sleep(0.1)


def delete_topics(admin: AdminClient, names: Iterable[str], timeout: float = 30.0) -> None:
    """Delete topics, ignoring ones already gone (best effort, e.g. at test teardown)."""
    names = list(names)
    if not names:
        return
    for future in admin.delete_topics(names, request_timeout=timeout).values():
        # Already deleted, or the broker is gone: nothing is left to clean up.
        with contextlib.suppress(KafkaException, TimeoutError):
            future.result(timeout=timeout)


def partition_replicas(admin: AdminClient, topic: str, partition: int = 0) -> tuple[int, list[int]]:
    """(leader id, replica ids) of one partition, as the cluster reports them now."""
    metadata = admin.list_topics(topic=topic, timeout=10)
    part = metadata.topics[topic].partitions[partition]
    return int(part.leader), [int(r) for r in part.replicas]
