"""server.properties for local KRaft nodes, tuned for tests, demos and CI.

Every node is broker and controller at once (combined mode). The quorum is
static (``controller.quorum.voters``), so a node keeps its ports for the life
of the cluster, including across a restart in a fault test.

With a ``ScramSpec`` the client (and inter-broker) listener is SASL_PLAINTEXT
with SCRAM; the controller listener stays PLAINTEXT on loopback. The users'
credentials are written into the metadata log at format time (``--add-scram``).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

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


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_LISTENER = "SASL_PLAINTEXT"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
# Names and passwords travel inside StorageTool's "[name=..,password=..]" syntax, a
# JAAS string and a java @argfile: none of their separators or quotes may occur.
_SCRAM_TEXT = re.compile(r"""^[^\s,\[\]="'\\#;]+$""")


@dataclass(frozen=True)
class ScramSpec:
    """SASL/SCRAM on the client listener: the users, the mechanism, the inter-broker user.

    Passwords are kept out of ``repr``; the generated server.properties (the
    inter-broker JAAS line) and the format arguments hold them, nothing else.
    """

    users: Mapping[str, str] = field(repr=False)
    mechanism: str = "SCRAM-SHA-256"
    inter_broker_user: str = "admin"

    def __post_init__(self) -> None:
        if self.mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"sasl mechanism must be one of {SCRAM_MECHANISMS}")
        if not self.users:
            raise ValueError("SCRAM needs at least one user")
        for name, password in self.users.items():
            # The message names the user, never the password.
            if not _SCRAM_TEXT.match(name):
                raise ValueError(f"SCRAM user name {name!r} has a space, quote or separator")
            if not _SCRAM_TEXT.match(password):
                raise ValueError(f"password of SCRAM user {name!r} has a space, quote or separator")
        if self.inter_broker_user not in self.users:
            raise ValueError(
                f"inter-broker user {self.inter_broker_user!r} must be one of the SCRAM users"
            )
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))

    def server_properties(self) -> dict[str, str]:
        """Broker settings for SCRAM on ``SASL_LISTENER``, inter-broker traffic included."""
        prefix = f"listener.name.{SASL_LISTENER.lower()}.{self.mechanism.lower()}"
        password = self.users[self.inter_broker_user]
        return {
            "sasl.enabled.mechanisms": self.mechanism,
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            f"{prefix}.sasl.jaas.config": f"{SCRAM_LOGIN_MODULE} required "
            f'username="{self.inter_broker_user}" password="{password}";',
        }

    def storage_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user's credentials."""
        args: list[str] = []
        for name, password in sorted(self.users.items()):
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args

    def client_config(self, user: str | None = None) -> dict[str, str]:
        """librdkafka settings to authenticate as ``user`` (default: the inter-broker user)."""
        name = user or self.inter_broker_user
        try:
            password = self.users[name]
        except KeyError:
            raise ValueError(f"no SCRAM user {name!r}") from None
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": self.mechanism,
            "sasl.username": name,
            "sasl.password": password,
        }


def broker_properties(
    node: NodeSpec,
    cluster: Sequence[NodeSpec],
    data_dir: Path,
    extra: Mapping[str, str] | None = None,
    *,
    scram: ScramSpec | None = None,
) -> dict[str, str]:
    """The properties for one node of ``cluster``; ``extra`` overrides any of them.

    ``scram`` makes the client listener SASL_PLAINTEXT (see ``ScramSpec``).
    """
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
        # Retention is the bound on how long erased data survives in the pipeline's
        # own topics (docs/own-data.md); check it every few seconds (default 5 min)
        # so tests and the demo see a short bound enforced without waiting minutes.
        "log.retention.check.interval.ms": "5000",
    }
    if scram is not None:
        props.update(
            {
                "listeners": f"{SASL_LISTENER}://{node.host}:{node.broker_port},"
                f"CONTROLLER://{node.host}:{node.controller_port}",
                "advertised.listeners": f"{SASL_LISTENER}://{node.bootstrap}",
                "inter.broker.listener.name": SASL_LISTENER,
                "listener.security.protocol.map": f"{SASL_LISTENER}:SASL_PLAINTEXT,"
                "CONTROLLER:PLAINTEXT",
                **scram.server_properties(),
            }
        )
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
