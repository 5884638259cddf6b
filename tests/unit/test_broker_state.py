"""Cluster state files and pid checks, without starting any process."""

from __future__ import annotations

import os
from pathlib import Path

from streams.broker import layout
from streams.broker.cluster_dirs import running_bootstrap, running_processes, sweep_abandoned
from streams.broker.process import pid_is_running, read_pid_file, write_pid_file

STATE = layout.ClusterState(
    name="demo",
    kafka_version="4.1.2",
    cluster_id="MkU3OEVBNTcwNTJENDM2Qk",
    bootstrap_servers="127.0.0.1:1,127.0.0.1:3",
    started_at="2026-01-01T00:00:00+00:00",
    owner_pid=None,
    nodes=[layout.NodeState(1, 1, 2, pid=10), layout.NodeState(2, 3, 4)],
)


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    layout.write_state(tmp_path, STATE)
    assert layout.read_state(tmp_path) == STATE
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.json"]  # no temp file left


def test_unreadable_state_means_no_cluster(tmp_path: Path) -> None:
    assert layout.read_state(tmp_path) is None
    (tmp_path / "cluster.json").write_text("{not json")
    assert layout.read_state(tmp_path) is None


def test_pid_check_needs_the_marker_in_the_command_line() -> None:
    own_cmdline = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")
    assert pid_is_running(os.getpid(), own_cmdline[0].decode())
    # Same pid, but not our broker: a reused pid must never be signalled.
    assert not pid_is_running(os.getpid(), "/nowhere/server.properties")


def test_pid_files(tmp_path: Path) -> None:
    assert read_pid_file(tmp_path) is None
    write_pid_file(tmp_path, 4242)
    assert read_pid_file(tmp_path) == 4242


def stale_cluster(base: Path, name: str, owner_pid: int | None) -> Path:
    cluster_dir = base / name
    node = layout.node_dir(cluster_dir, 1)
    (node / "data").mkdir(parents=True)
    (node / "logs").mkdir()
    # A pid that is certainly not one of our brokers (our own, wrong marker).
    write_pid_file(node, os.getpid())
    layout.write_state(
        cluster_dir, layout.ClusterState(**{**STATE.__dict__, "owner_pid": owner_pid})
    )
    return cluster_dir


def test_a_dead_pid_file_is_not_a_running_cluster(tmp_path: Path) -> None:
    cluster_dir = stale_cluster(tmp_path, "stale", owner_pid=None)
    assert running_processes(cluster_dir) == {}
    assert running_bootstrap(cluster_dir) is None


def test_sweep_cleans_clusters_whose_owner_is_gone(tmp_path: Path) -> None:
    gone = stale_cluster(tmp_path, "owner-gone", owner_pid=2**22 + 1)  # above pid_max
    alive = stale_cluster(tmp_path, "owner-alive", owner_pid=os.getpid())
    detached = stale_cluster(tmp_path, "detached", owner_pid=None)
    assert sweep_abandoned(tmp_path) == ["owner-gone"]
    assert not (gone / "node-1" / "data").exists()
    assert (gone / "node-1" / "logs").is_dir()  # kept for whoever lost the session
    assert layout.read_state(gone) is None
    assert (alive / "node-1" / "data").is_dir()
    assert (detached / "node-1" / "data").is_dir()
