"""The files of one local cluster, and its state JSON.

<var>/kafka/<name>/
    cluster.json            name, version, ports, pids, owner (see ClusterState)
    node-<id>/
        server.properties
        kafka.pid
        data/               KRaft metadata log and topic data (removed on stop)
        logs/               server.log, controller.log, state-change.log,
                            stdout.log (JVM output), format.log (kept on failure)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE_NAME = "cluster.json"
# Names become directory names: no separators, no leading dot or dash.
CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def node_dir(cluster_dir: Path, node_id: int) -> Path:
    return cluster_dir / f"node-{node_id}"


def data_dir(cluster_dir: Path, node_id: int) -> Path:
    return node_dir(cluster_dir, node_id) / "data"


def logs_dir(cluster_dir: Path, node_id: int) -> Path:
    return node_dir(cluster_dir, node_id) / "logs"


def properties_file(cluster_dir: Path, node_id: int) -> Path:
    return node_dir(cluster_dir, node_id) / "server.properties"


def server_log(cluster_dir: Path, node_id: int) -> Path:
    return logs_dir(cluster_dir, node_id) / "server.log"


def stdout_log(cluster_dir: Path, node_id: int) -> Path:
    return logs_dir(cluster_dir, node_id) / "stdout.log"


def node_ids_on_disk(cluster_dir: Path) -> list[int]:
    ids = []
    for child in cluster_dir.glob("node-*"):
        suffix = child.name.removeprefix("node-")
        if suffix.isdigit():
            ids.append(int(suffix))
    return sorted(ids)


@dataclass
class NodeState:
    node_id: int
    broker_port: int
    controller_port: int
    pid: int | None = None


@dataclass
class ClusterState:
    name: str
    kafka_version: str
    cluster_id: str
    bootstrap_servers: str
    started_at: str
    # The process whose exit must stop the cluster; None for a detached cluster
    # (``lifecycle kafka up``), which runs until ``lifecycle kafka down``.
    owner_pid: int | None
    nodes: list[NodeState] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        raw = json.loads(text)
        nodes = [NodeState(**node) for node in raw.pop("nodes", [])]
        return cls(**raw, nodes=nodes)


def write_state(cluster_dir: Path, state: ClusterState) -> None:
    # Write-then-rename so a reader (``status`` in another shell) never sees half a file.
    target = cluster_dir / STATE_FILE_NAME
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(state.to_json(), encoding="utf-8")
    tmp.replace(target)


def read_state(cluster_dir: Path) -> ClusterState | None:
    try:
        return ClusterState.from_json((cluster_dir / STATE_FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None


def remove_state(cluster_dir: Path) -> None:
    (cluster_dir / STATE_FILE_NAME).unlink(missing_ok=True)
