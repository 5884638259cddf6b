"""Operations on a cluster through its dir alone, usable from any process.

``lifecycle kafka down/status`` run in a different process from the one that
started the cluster, so they find the JVMs through pid files (checked against
the command line, see ``pid_is_running``). The same functions clean up after a
test run that died without stopping its brokers (e.g. killed with SIGKILL).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from streams.broker import layout
from streams.broker.process import (
    NodeProcess,
    read_pid_file,
    remove_pid_file,
    stop_all,
)


def running_processes(cluster_dir: Path) -> dict[int, NodeProcess]:
    """The cluster's JVMs that are still running, by node id."""
    running = {}
    for node_id in layout.node_ids_on_disk(cluster_dir):
        pid = read_pid_file(layout.node_dir(cluster_dir, node_id))
        if pid is None:
            continue
        proc = NodeProcess(pid, str(layout.properties_file(cluster_dir, node_id)))
        if proc.is_running():
            running[node_id] = proc
    return running


def remove_cluster_files(cluster_dir: Path, *, keep_logs: bool) -> None:
    """Forget a stopped cluster: its data always, its logs unless ``keep_logs``."""
    if not keep_logs:
        shutil.rmtree(cluster_dir, ignore_errors=True)
        return
    for node_id in layout.node_ids_on_disk(cluster_dir):
        shutil.rmtree(layout.data_dir(cluster_dir, node_id), ignore_errors=True)
        remove_pid_file(layout.node_dir(cluster_dir, node_id))
    layout.remove_state(cluster_dir)


def stop_cluster_dir(cluster_dir: Path, *, timeout: float, keep_logs: bool) -> int:
    """Stop whatever runs from ``cluster_dir`` and remove its data; returns nodes stopped."""
    procs = running_processes(cluster_dir)
    stop_all(procs.values(), timeout=timeout)
    remove_cluster_files(cluster_dir, keep_logs=keep_logs)
    return len(procs)


def owner_is_alive(owner_pid: int) -> bool:
    try:
        os.kill(owner_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_abandoned(base_dir: Path, *, timeout: float = 5.0) -> list[str]:
    """Stop clusters whose owning process is gone; returns their names.

    Only clusters with an owner (started by a test session or a script through
    ``LocalKafka``) are swept; detached clusters (owner None) wait for ``down``.
    Logs are kept so whoever lost the session can still read them.
    """
    swept: list[str] = []
    if not base_dir.is_dir():
        return swept
    for cluster_dir in sorted(p for p in base_dir.iterdir() if p.is_dir()):
        state = layout.read_state(cluster_dir)
        if state is None or state.owner_pid is None or owner_is_alive(state.owner_pid):
            continue
        stop_cluster_dir(cluster_dir, timeout=timeout, keep_logs=True)
        swept.append(cluster_dir.name)
    return swept


def running_bootstrap(cluster_dir: Path) -> str | None:
    """Bootstrap servers of a cluster whose nodes are all running, else None."""
    state = layout.read_state(cluster_dir)
    if state is None or not state.nodes:
        return None
    if len(running_processes(cluster_dir)) != len(state.nodes):
        return None
    return state.bootstrap_servers
