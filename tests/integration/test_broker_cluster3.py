"""Replication guarantees on a real 3-node KRaft cluster (RF 3, min.insync.replicas 2).

These are the guarantees the pipeline's "nothing is lost" promise rests on: an
acknowledged (acks=all) write survives one node crashing, and with too few
in-sync replicas the cluster refuses acks=all writes instead of accepting
them unsafely.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.broker.admin import admin_client, create_topic, partition_replicas
from streams.broker.launcher import LocalKafka

BATCH = 20


class DeliveryLog:
    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            value = msg.value()
            assert value is not None
            self.delivered.append(value)


def produce(producer: Producer, topic: str, values: list[bytes]) -> DeliveryLog:
    log = DeliveryLog()
    for value in values:
        producer.produce(topic, value=value, on_delivery=log)
    # The ceiling only turns a hang into a failure; nothing asserts on duration.
    assert producer.flush(180) == 0
    return log


def wait_until(condition_met: Callable[[], bool], what: str, attempts: int = 600) -> None:
    """Poll ``condition_met`` every 0.1 s; fail after ``attempts`` polls."""
    for _ in range(attempts):
        if condition_met():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"unused-{uuid.uuid4().hex}",  # required, but no group is joined
            "enable.auto.commit": False,
        }
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        for _ in range(600):
            if len(values) >= expected:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    return values


def new_rf3_topic(admin: AdminClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    create_topic(admin, name, partitions=1, replication_factor=3)
    return name


def test_acks_all_writes_survive_a_killed_leader(kafka_cluster3_for_faults: LocalKafka) -> None:
    cluster = kafka_cluster3_for_faults
    admin = admin_client(cluster.bootstrap_servers)
    topic = new_rf3_topic(admin, "survive-kill")
    leader, replicas = partition_replicas(admin, topic)
    assert sorted(replicas) == cluster.node_ids

    # Idempotent: retries across the leader change must not write duplicates.
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "enable.idempotence": True}
    )
    before = [f"before-{i}".encode() for i in range(BATCH)]
    first = produce(producer, topic, before)
    assert first.errors == []

    # A crash, not a clean shutdown: the controller must notice and move leadership.
    cluster.kill_node(leader)
    after = [f"after-{i}".encode() for i in range(BATCH)]
    second = produce(producer, topic, after)
    assert second.errors == []
    assert second.delivered == after

    survivor = next(i for i in cluster.running_node_ids() if i != leader)
    assert read_all(cluster.node_bootstrap(survivor), topic, 2 * BATCH) == before + after


def test_min_insync_replicas_refuses_acks_all_with_two_nodes_down(
    kafka_cluster3_for_faults: LocalKafka,
) -> None:
    cluster = kafka_cluster3_for_faults
    admin = admin_client(cluster.bootstrap_servers)
    topic = new_rf3_topic(admin, "min-isr")
    leader, _ = partition_replicas(admin, topic)

    # Clean stops, one at a time: each controlled shutdown takes the node out of
    # the ISR while a controller majority still exists to record it. (Crashing two
    # of three nodes would lose the KRaft quorum before the ISR could shrink.)
    for node_id in cluster.node_ids:
        if node_id != leader:
            cluster.stop_node(node_id)

    leader_admin = admin_client(cluster.node_bootstrap(leader))

    def isr_is_leader_only() -> bool:
        part = leader_admin.list_topics(topic=topic, timeout=10).topics[topic].partitions[0]
        return list(part.isrs) == [leader]

    wait_until(isr_is_leader_only, f"the ISR of {topic} to shrink to node {leader}")

    no_retries = {
        "bootstrap.servers": cluster.node_bootstrap(leader),
        # Report the broker's first answer instead of retrying until a timeout.
        "enable.idempotence": False,
        "retries": 0,
    }
    refused = produce(Producer({**no_retries, "acks": "all"}), topic, [b"must-not-be-accepted"])
    assert [e.code() for e in refused.errors] == [KafkaError.NOT_ENOUGH_REPLICAS]
    assert refused.delivered == []

    # The leader itself is fine: a write that asks for less durability is taken.
    accepted = produce(Producer({**no_retries, "acks": "1"}), topic, [b"leader-only"])
    assert accepted.errors == []
