"""``lifecycle desk``: the privacy desk's commands.

    lifecycle desk project [--once]            keep the read model up to date
    lifecycle desk serve [--project]           the web application (and the projector)
    lifecycle desk subject SUBJECT_ID          what is held, requests, holds, commands
    lifecycle desk requests [--overdue]        open requests by deadline
    lifecycle desk render REQUEST_ID --out F   the answer a subject was sent
    lifecycle desk parked [--all]              items parked on the dead-letter topic, and why
    lifecycle desk hash-password               a password hash for the users file

The read commands bring the read model up to date first (only what is new
since the last run; ``--no-sync`` answers from it as it is). Topic names come
from the pipeline's settings (``LIFECYCLE_TOPIC_PREFIX``, ``LIFECYCLE_APP_ID``);
the read model's location from ``LIFECYCLE_DESK_DATABASE_URL`` (default: SQLite
under ``var/desk/``). See docs/desk.md.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click

from desk.readmodel import queries
from desk.readmodel.topics import MissingTopics
from desk.runtime import Desk

log = logging.getLogger(__name__)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@contextmanager
def _desk(sync: bool) -> Iterator[Desk]:
    from streams.broker.errors import BrokerError

    desk = Desk.open()
    try:
        if sync:
            projector = None
            try:
                projector = desk.projector()
                projector.catch_up()
            except (BrokerError, MissingTopics, TimeoutError) as exc:
                _fail(f"{exc} (--no-sync answers from the read model as it is)")
            finally:
                if projector is not None:
                    projector.close()
        yield desk
    finally:
        desk.close()


_sync_option = click.option(
    "--sync/--no-sync", default=True, help="Read what is new on the topics first (default)."
)


@click.group("desk")
def desk_group() -> None:
    """Privacy desk: the read model, the web application and read-only views."""


@desk_group.command("subject")
@click.argument("subject_id")
@_sync_option
def subject(subject_id: str, sync: bool) -> None:
    """Show what is held on SUBJECT_ID, its requests, deadlines, holds and commands."""
    from desk.text import describe_subject

    with _desk(sync) as desk, desk.store.engine.connect() as conn:
        view = queries.subject_view(conn, subject_id, desk.store.ref(subject_id), desk.clock.now())
    if not view.known and not view.requests:
        _fail(f"no state for subject {subject_id} (nothing held, or never seen)")
    click.echo(describe_subject(view), nl=False)


@desk_group.command("requests")
@click.option("--overdue", is_flag=True, help="Only requests past their due date.")
@click.option("--type", "request_type", default=None, help="Only this request type.")
@click.option("--status", default=None, help="Only this status.")
@click.option("--limit", type=int, default=1000, show_default=True)
@_sync_option
def requests_(
    overdue: bool, request_type: str | None, status: str | None, limit: int, sync: bool
) -> None:
    """List open requests, the most urgent first."""
    from desk.text import format_requests

    filters = queries.Filters(request_type, status, "overdue" if overdue else None)
    with _desk(sync) as desk, desk.store.engine.connect() as conn:
        rows = queries.requests_by_deadline(conn, desk.clock.now(), filters, limit=limit)
    click.echo(format_requests(rows), nl=False)


@desk_group.command("parked")
@click.option(
    "--all", "include_undecodable", is_flag=True, help="Also list input that never decoded."
)
@_sync_option
def parked(include_undecodable: bool, sync: bool) -> None:
    """List parked items: accepted messages the pipeline could not process or deliver."""
    from desk.text import format_parked

    with _desk(sync) as desk, desk.store.engine.connect() as conn:
        rows = queries.parked(conn, include_undecodable=include_undecodable)
    click.echo(format_parked(rows), nl=False)


@desk_group.command("render")
@click.argument("request_id")
@click.option("--subject", "subject_id", default=None, help="When two subjects share the id.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="File to write (HTML access report, refusal letter or portability JSON).",
)
@click.option("--csv", "as_csv", is_flag=True, help="A portability export as CSV.")
@_sync_option
def render(request_id: str, subject_id: str | None, out: Path, as_csv: bool, sync: bool) -> None:
    """Render the latest answer to REQUEST_ID for the subject."""
    from desk import answers

    with _desk(sync) as desk, desk.store.engine.connect() as conn:
        subjects = [subject_id] if subject_id else queries.subjects_of_request(conn, request_id)
        if len(subjects) > 1:
            _fail(f"request {request_id} exists for several subjects; pass --subject")
        found = queries.responses(conn, subjects[0], request_id) if subjects else []
    if not found:
        _fail(f"no response for request {request_id}")
    latest = found[-1]
    try:
        answer = answers.render(latest, "csv" if as_csv else None)
    except answers.NothingToRender as exc:
        _fail(str(exc))
    out.write_text(answer.text, encoding="utf-8")
    click.echo(f"{answer.kind} for {request_id} ({latest.status}) written to {out}")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@desk_group.command("project")
@click.option("--once", is_flag=True, help="Catch up with the topics and stop.")
def project(once: bool) -> None:
    """Keep the read model up to date with the pipeline's topics (until SIGTERM)."""
    from streams.broker.errors import BrokerError

    desk = Desk.open()
    try:
        projector = desk.projector()
        try:
            if once:
                click.echo(f"applied {projector.catch_up()} message(s)")
                return
            stop = _stop_on_signals()
            log.info("desk projector reading %s", desk.topics.prefix)
            projector.run(stop)
        finally:
            projector.close()
    except (BrokerError, MissingTopics, TimeoutError) as exc:
        _fail(str(exc))
    finally:
        desk.close()


@desk_group.command("serve")
@click.option("--host", default=None, help="Default: LIFECYCLE_DESK_HOST (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: LIFECYCLE_DESK_PORT (8088).")
@click.option("--project", "with_projector", is_flag=True, help="Run the projector too.")
def serve(host: str | None, port: int | None, with_projector: bool) -> None:
    """Run the desk's web application."""
    from desk.web.server import serve as run_server

    run_server(host=host, port=port, with_projector=with_projector)


@desk_group.command("hash-password")
def hash_password() -> None:
    """Read a password (prompted, not echoed) and print its hash for the users file."""
    from desk.web.auth import hash_password as make_hash

    password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    click.echo(make_hash(password))
