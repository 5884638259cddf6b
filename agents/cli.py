"""The ``lifecycle`` command: one entry point for every operator task."""

from __future__ import annotations

import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from agents.clock import SystemClock
from desk.cli import desk_group
from streams.broker.cli import kafka
from streams.broker.errors import BrokerError
from streams.cli import publish, tail
from streams.settings import Settings

if TYPE_CHECKING:
    from agents.runtime.replayer import ErasureReplayer


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _bootstrap() -> str:
    from streams.connection import bootstrap_servers

    try:
        return bootstrap_servers()
    except BrokerError as exc:
        _fail(str(exc))


@click.group()
def main() -> None:
    """Data-lifecycle pipeline: retention, erasure and rights, event by event, with proof."""
    logging.basicConfig(
        level=Settings().log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


main.add_command(kafka)
main.add_command(publish)
main.add_command(tail)
main.add_command(desk_group)


@main.command()
def worker() -> None:
    """Run the Faust worker (creates declared topics first; SIGTERM stops it cleanly)."""
    from agents.runtime.worker import run_worker

    run_worker(Settings(), _bootstrap())


@main.group()
def topics() -> None:
    """Declared topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every declared topic that is missing; fail on drift."""
    from agents.rules.policy import load_policy
    from streams.admin import TopicDrift, ensure_topics

    settings = Settings()
    policy = load_policy(settings.policy_path)
    try:
        created = ensure_topics(
            settings, _bootstrap(), [s.id for s in policy.systems], policy.topic_retention()
        )
    except TopicDrift as exc:
        _fail(str(exc))
    click.echo(f"created {len(created)} topic(s)")


@main.command()
@click.option("--system", required=True, help="Downstream system id from the policy.")
@click.option("--fail-action", "fail_actions", multiple=True, help="Answer FAILED to this action.")
@click.option("--silent", is_flag=True, help="Consume but never acknowledge (to test escalation).")
def downstream(system: str, fail_actions: tuple[str, ...], silent: bool) -> None:
    """Run the reference downstream consumer for one system."""
    from agents.tools.downstream import Behaviour, DownstreamConsumer, ReferenceStore
    from schemas.commands import Action

    settings = Settings()
    store = ReferenceStore(settings.var_dir / "downstream" / f"{system}.sqlite")
    consumer = DownstreamConsumer(
        system=system,
        bootstrap=_bootstrap(),
        settings=settings,
        store=store,
        behaviour=Behaviour(frozenset(Action(a) for a in fail_actions), silent),
    )
    consumer.run()


@main.group("downstream-backup")
def downstream_backup() -> None:
    """Backups of a reference downstream store, to show erasure replay (docs/own-data.md)."""


def _store_path(system: str, store: Path | None) -> Path:
    return store or Settings().var_dir / "downstream" / f"{system}.sqlite"


@downstream_backup.command("take")
@click.option("--system", required=True, help="Downstream system id from the policy.")
@click.option("--out", "target", type=click.Path(path_type=Path), required=True)
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Default: var/.")
def downstream_backup_take(system: str, target: Path, store: Path | None) -> None:
    """Copy the system's store (data and idempotency records) to OUT, stamped now."""
    from agents.tools.downstream import ReferenceStore

    taken_at = datetime.now(UTC)
    reference = ReferenceStore(_store_path(system, store))
    try:
        reference.snapshot(target, taken_at)
    finally:
        reference.close()
    click.echo(f"backup of {system} taken at {taken_at.isoformat()}: {target}")


@downstream_backup.command("restore")
@click.option("--system", required=True, help="Downstream system id from the policy.")
@click.option("--from", "source", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Default: var/.")
@click.option(
    "--announce/--no-announce",
    default=True,
    show_default=True,
    help="Publish SystemRestored, so the pipeline re-sends the erasures made since the backup.",
)
def downstream_backup_restore(
    system: str, source: Path, store: Path | None, announce: bool
) -> None:
    """Replace the system's store with a backup (erased data comes back), and say so."""
    from agents.tools.downstream import ReferenceStore
    from streams.publisher import Publisher

    reference = ReferenceStore(_store_path(system, store))
    try:
        taken_at = reference.restore(source)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        reference.close()
    click.echo(f"{system} restored to its backup of {taken_at.isoformat()}")
    if announce:
        with Publisher(_bootstrap(), Settings()) as publisher:
            publisher.publish_restored(system, taken_at)
        click.echo("SystemRestored published: `lifecycle erasures listen` re-sends the erasures")


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
@click.option("--partition", "partitions", type=int, multiple=True, help="Default: all.")
@click.option("--start", type=int, default=0, show_default=True)
@click.option("--end", type=int, default=None, help="Exclusive end offset (default: the end).")
def audit_verify(partitions: tuple[int, ...], start: int, end: int | None) -> None:
    """Check the hash chain of the audit topic; name the first broken link.

    Decisions appended again after a crash (a replay: same input) and
    byte-identical redeliveries are counted, not failures. A proof split over
    several events (parts of an entry, pages of an erasure) that misses a piece
    is named. Exit 2 when a chain is broken or a proof incomplete.
    """
    from agents.audit.verify import verify_partition
    from streams.codec import Codec
    from streams.topics import TopicNames

    settings = Settings()
    config = {"bootstrap.servers": _bootstrap(), **settings.security.confluent_config()}
    broken = False
    for partition in partitions or range(settings.partitions):
        result = verify_partition(
            config,
            TopicNames(settings.topic_prefix).audit,
            partition,
            Codec.from_settings(settings),
            SystemClock(),
            settings.audit_hmac_key.get_secret_value().encode(),
            start,
            end,
        )
        click.echo(result.summary())
        broken = broken or result.broken is not None or bool(result.incomplete)
    if broken:
        sys.exit(2)


@main.group()
def erasures() -> None:
    """Erasures re-applied after a downstream restore (N9.erasure-replay)."""


def _replayer() -> ErasureReplayer:
    from agents.rules.policy import load_policy
    from agents.runtime.replayer import ErasureReplayer

    settings = Settings()
    policy = load_policy(settings.policy_path)
    replayer = ErasureReplayer(
        _bootstrap(),
        settings,
        clock=SystemClock(),
        clock_margin=policy.backups.clock_margin.as_timedelta(),
    )
    return replayer


@erasures.command("replay")
@click.option("--system", required=True, help="Downstream system id that was restored.")
@click.option(
    "--since",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    help="When the restored backup was taken (ISO 8601; UTC when no offset is given).",
)
@click.option("--restore-id", default=None, help="Names the restore in the audit trail.")
def erasures_replay(system: str, since: datetime, restore_id: str | None) -> None:
    """Re-send every DELETE confirmed by SYSTEM since the backup was taken, same command ids."""
    import uuid

    replayer = _replayer()
    when = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    report = replayer.replay(system, when, restore_id or f"restore-{uuid.uuid4().hex[:16]}")
    click.echo(report.summary())
    if report.unreadable:
        sys.exit(2)


@erasures.command("listen")
def erasures_listen() -> None:
    """Replay erasures for every SystemRestored event on <prefix>.restores (runs until stopped)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from agents.runtime.replayer import RestoreListener
    from agents.runtime.replayer_metrics import ReplayerMetrics

    settings = Settings()
    registry = CollectorRegistry()
    metrics = ReplayerMetrics.create(registry)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    listener = RestoreListener(_replayer(), metrics=metrics)
    signal.signal(signal.SIGTERM, lambda *_: listener.stop())
    listener.run()


@main.group()
def schemas() -> None:
    """Avro schemas."""


@schemas.command("check-compat")
def schemas_check_compat() -> None:
    """Fail unless every schema is FULL_TRANSITIVE compatible with its history."""
    from streams.compat import check_compatibility

    problems = check_compatibility()
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo("all schemas compatible with their history")


@main.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def demo(duration: float | None) -> None:
    """Local broker + worker + downstream stores + traffic simulator, with a live summary."""
    from agents.tools.demo import run_demo

    run_demo(duration=duration)
