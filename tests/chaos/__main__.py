"""``python -m tests.chaos run`` (what ``make chaos`` runs) and ``... check`` (topics only).

    python -m tests.chaos run                 # the whole suite; CHAOS_* env vars tune it
    python -m tests.chaos check --prefix P    # check an existing pipeline's topics

Both print a report and exit 1 when any check finds a violation (2 when the
run itself failed).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from agents.rules.policy import load_policy
from streams.codec import Codec
from streams.settings import Settings
from streams.topics import TopicNames
from tests.chaos import checks, live
from tests.chaos.config import ChaosConfig
from tests.chaos.harness import DEMO_POLICY, run_chaos
from tests.chaos.report import RunReport, update_doc
from tests.chaos.snapshot import read_snapshot


@click.group()
def main() -> None:
    """Fault-injection suite for the data-lifecycle pipeline."""


@main.command()
def run() -> None:
    """Cluster, workers, downstream consumers, traffic, faults, checks (CHAOS_* env vars)."""
    config = ChaosConfig()
    began = time.monotonic()
    report = run_chaos(config)
    click.echo(report.render())
    elapsed = time.monotonic() - began
    click.echo(f"\nwall time {elapsed:.0f}s; logs and report in var/chaos/{report.run_id}/")
    if config.doc is not None and report.error is None:
        update_doc(config.doc, report)
        click.echo(f"figures written to {config.doc}")
    sys.exit(0 if report.ok else 2 if report.error else 1)


@main.command()
@click.option(
    "--prefix", required=True, help="The pipeline's topic prefix (LIFECYCLE_TOPIC_PREFIX)."
)
@click.option(
    "--app-id", default=None, help="The workers' app id / consumer group (default: prefix)."
)
@click.option("--partitions", type=int, default=6, show_default=True)
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=DEMO_POLICY)
@click.option(
    "--grace", type=float, default=15.0, show_default=True, help="Seconds a due record may wait."
)
@click.option("--lag-timeout", type=float, default=30.0, show_default=True)
def check(
    prefix: str,
    app_id: str | None,
    partitions: int,
    policy_path: Path,
    grace: float,
    lag_timeout: float,
) -> None:
    """Check an existing pipeline's topics (KAFKA_BOOTSTRAP_SERVERS) without faults."""
    settings = Settings(topic_prefix=prefix, partitions=partitions, policy_path=policy_path)
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise click.UsageError("set KAFKA_BOOTSTRAP_SERVERS")
    policy = load_policy(policy_path)
    systems = [s.id for s in policy.systems]
    names = TopicNames(prefix)
    config = {"bootstrap.servers": bootstrap, **settings.security.confluent_config()}
    report = RunReport(
        f"check {prefix}", settings={"prefix": prefix, "partitions": str(partitions)}
    )
    snapshot = read_snapshot(config, names, systems, partitions, Codec.from_settings(settings))
    report.checks = checks.run_checks(
        snapshot, policy, now=datetime.now(UTC), grace=timedelta(seconds=grace)
    )
    groups = {app_id or prefix: [*names.inputs, names.acks, names.ticks]}
    groups |= {f"{prefix}.downstream.{s}": [names.command(s)] for s in systems}
    report.checks.append(
        live.lag_check(*live.wait_for_zero_lag(config, groups, partitions, lag_timeout))
    )
    env = {
        **os.environ,
        "LIFECYCLE_TOPIC_PREFIX": prefix,
        "LIFECYCLE_PARTITIONS": str(partitions),
    }
    report.checks.append(live.audit_chain_check(env))
    report.figures = checks.figures(snapshot, policy)
    click.echo(report.render())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
