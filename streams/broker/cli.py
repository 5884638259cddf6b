"""``lifecycle kafka up|down|status``: a detached local Kafka for demos, dev shells and CI.

    export "$(lifecycle kafka up --name ci)"    # sets KAFKA_BOOTSTRAP_SERVERS
    lifecycle kafka status --name ci
    lifecycle kafka down --name ci

Failures print one line (``Error: ...``) on stderr and exit 1.
"""

from __future__ import annotations

from typing import NoReturn

import click

from streams.broker import layout, paths
from streams.broker.cluster_dirs import (
    running_bootstrap,
    running_processes,
    stop_cluster_dir,
    sweep_abandoned,
)
from streams.broker.errors import BrokerError
from streams.broker.launcher import DEFAULT_WAIT_TIMEOUT_S, LocalKafka
from streams.broker.probe import broker_ids
from streams.broker.process import DEFAULT_STOP_TIMEOUT_S

DEFAULT_CLUSTER_NAME = paths.DEFAULT_CLUSTER_NAME
ENV_LINE = "KAFKA_BOOTSTRAP_SERVERS={}"


def _checked_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # The name becomes a path under <var>/kafka: `down --name ../x` must not reach
    # outside it.
    if not layout.CLUSTER_NAME.match(value):
        raise click.BadParameter(f"must match {layout.CLUSTER_NAME.pattern}")
    return value


name_option = click.option(
    "--name",
    default=DEFAULT_CLUSTER_NAME,
    show_default=True,
    callback=_checked_name,
    help="Cluster name; its files live in <var>/kafka/<name>.",
)


@click.group("kafka")
def kafka() -> None:
    """A local Apache Kafka (KRaft) started from the official jars, no Docker needed."""


@kafka.command()
@click.option("--nodes", type=click.Choice(["1", "3"]), default="1", show_default=True)
@name_option
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_WAIT_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for every node to serve requests.",
)
def up(nodes: str, name: str, wait_timeout: float) -> None:
    """Start a cluster in the background; print KAFKA_BOOTSTRAP_SERVERS=... on stdout."""
    cluster_dir = paths.clusters_dir() / name
    existing = layout.read_state(cluster_dir)
    bootstrap = running_bootstrap(cluster_dir)
    if existing is not None and bootstrap is not None:
        if len(existing.nodes) != int(nodes):
            _fail(
                f"kafka cluster '{name}' is already running with {len(existing.nodes)} node(s); "
                f"run `lifecycle kafka down --name {name}` first"
            )
        click.echo(f"kafka cluster '{name}' is already running", err=True)
        click.echo(ENV_LINE.format(bootstrap))
        return
    try:
        cluster = LocalKafka(int(nodes), name=name, wait_timeout=wait_timeout, keep_logs=True)
        cluster.start()
    except (BrokerError, ValueError) as exc:
        _fail(str(exc))
    cluster.detach()
    click.echo(
        f"kafka cluster '{name}' up in {cluster.startup_seconds:.1f}s "
        f"(logs: {cluster.cluster_dir}); stop it with `lifecycle kafka down --name {name}`",
        err=True,
    )
    click.echo(ENV_LINE.format(cluster.bootstrap_servers))


@kafka.command()
@name_option
@click.option("--all", "all_clusters", is_flag=True, help="Stop every cluster under <var>/kafka.")
@click.option(
    "--abandoned",
    is_flag=True,
    help="Stop only clusters whose owning process (a test session) has died.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_STOP_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
def down(name: str, all_clusters: bool, abandoned: bool, timeout: float) -> None:
    """Stop a cluster started by `up` (or all of them, or abandoned ones). Logs are kept."""
    base = paths.clusters_dir()
    if abandoned:
        for swept in sweep_abandoned(base, timeout=timeout):
            click.echo(f"kafka cluster '{swept}': stopped (its owner had exited)", err=True)
        return
    if all_clusters:
        dirs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    else:
        dirs = [base / name]
    for cluster_dir in dirs:
        if not cluster_dir.is_dir():
            click.echo(f"kafka cluster '{cluster_dir.name}' is not running", err=True)
            continue
        stopped = stop_cluster_dir(cluster_dir, timeout=timeout, keep_logs=True)
        if stopped:
            click.echo(f"kafka cluster '{cluster_dir.name}': stopped {stopped} node(s)", err=True)
        elif not all_clusters:
            click.echo(f"kafka cluster '{cluster_dir.name}' is not running", err=True)


@kafka.command()
@name_option
def status(name: str) -> None:
    """Show the nodes of a cluster; exit 1 unless every node runs and the cluster answers."""
    cluster_dir = paths.clusters_dir() / name
    state = layout.read_state(cluster_dir)
    if state is None:
        _fail(f"kafka cluster '{name}' is not running (no state in {cluster_dir})")
    running = running_processes(cluster_dir)
    live_ids: set[int] = set()
    for node in state.nodes:
        answer = broker_ids(f"127.0.0.1:{node.broker_port}") if node.node_id in running else None
        live_ids |= answer or set()
        pid = running[node.node_id].pid if node.node_id in running else None
        click.echo(
            f"node {node.node_id}: {'running' if pid else 'down'} pid={pid} "
            f"broker=127.0.0.1:{node.broker_port} controller=127.0.0.1:{node.controller_port} "
            f"serving={'yes' if answer is not None else 'no'}"
        )
    click.echo(f"kafka {state.kafka_version}, cluster id {state.cluster_id}, dir {cluster_dir}")
    click.echo(ENV_LINE.format(state.bootstrap_servers))
    expected = {node.node_id for node in state.nodes}
    if not expected <= live_ids:
        _fail(f"kafka cluster '{name}' is not healthy: live brokers {sorted(live_ids)}")


def _fail(message: str) -> NoReturn:
    # ClickException prints "Error: <message>" on stderr and exits 1, no traceback.
    raise click.ClickException(message)
