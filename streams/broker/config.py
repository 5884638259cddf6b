"""server.properties for local KRaft nodes, tuned for tests, demos and CI.

Every node is broker and controller at once (combined mode). The quorum is
static (``controller.quorum.voters``), so a node keeps its ports for the life
of the cluster, including across a restart in a fault test.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.broker.ports import LOOPBACK


@dataclass(frozen=True)
class NodeSpec:
    node_id: int
    broker_port: int
    controller_port: int
    host: str = LOOPBACK

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.broker_port}"


def new_cluster_id() -> str:
    """A 22-character KRaft cluster id, made the way Kafka's ``Uuid.randomUuid`` does.

    Kafka rejects ids that start with '-' (they look like command-line flags).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def node_specs(ports: Sequence[int], host: str = LOOPBACK) -> list[NodeSpec]:
    """Pair up ports as (broker, controller) per node; node ids count from 1."""
    if len(ports) % 2:
        raise ValueError("need an even number of ports: one broker and one controller per node")
    return [
        NodeSpec(
            node_id=i + 1, broker_port=ports[2 * i], controller_port=ports[2 * i + 1], host=host
        )
        for i in range(len(ports) // 2)
    ]


def quorum_voters(nodes: Sequence[NodeSpec]) -> str:
    return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)


def bootstrap_servers(nodes: Sequence[NodeSpec]) -> str:
    return ",".join(n.bootstrap for n in nodes)


def broker_properties(
    node: NodeSpec,
    cluster: Sequence[NodeSpec],
    data_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The properties for one node of ``cluster``; ``extra`` overrides any of them."""
    size = len(cluster)
    replication = str(min(3, size))
    min_isr = str(min(2, size))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": quorum_voters(cluster),
        "listeners": f"PLAINTEXT://{node.host}:{node.broker_port},"
        f"CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{node.bootstrap}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # Topics are declared explicitly by the pipeline and the tests; a typo in a
        # topic name must fail instead of silently creating a new topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        # Internal topics: as replicated as the cluster allows. Fewer partitions than
        # the defaults (50) because creating them dominates a test's first join.
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        # A consumer group must not sit idle for 3 s waiting for more members.
        "group.initial.rebalance.delay.ms": "0",
        # Fault tests: notice a dead node (fence it, shrink ISRs, move leaders) in a
        # few seconds instead of the production defaults (9 s / 30 s).
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "6000",
        "replica.lag.time.max.ms": "10000",
        # Leaders move only when a test makes them move.
        "auto.leader.rebalance.enable": "false",
        # Small machines (2 cores, several JVMs): fewer threads and a smaller
        # compaction buffer (default 128 MiB of a 512 MiB heap).
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    props.update(extra or {})
    return props


def render_properties(props: Mapping[str, str]) -> str:
    """Java properties text, one ``key=value`` per line, sorted for stable diffs."""
    lines = [f"{_escape(key)}={_escape(value)}" for key, value in sorted(props.items())]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    # Backslash is the properties format's escape character; newlines would
    # start a new entry.
    return text.replace("\\", "\\\\").replace("\n", "\\n")
