"""``desk``: the privacy desk's read-only view (mounted as ``lifecycle desk``).

    lifecycle desk subject SUBJECT_ID       what is held, requests, holds, commands
    lifecycle desk requests [--overdue]     open requests by due date
    lifecycle desk render REQUEST_ID --out FILE
    lifecycle desk parked [--all]           items parked on the dead-letter topic

See ``agents/desk.py`` for where the data comes from.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from agents import desk
from agents.clock import SystemClock
from agents.rules.policy import load_policy
from agents.rules.snapshot import SubjectSnapshot
from streams.settings import Settings


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _consumer_config(settings: Settings) -> dict[str, str]:  # pragma: no cover - needs a broker
    from streams.broker.errors import BrokerError
    from streams.connection import bootstrap_servers

    try:
        bootstrap = bootstrap_servers()
    except BrokerError as exc:
        _fail(str(exc))
    return {"bootstrap.servers": bootstrap, **settings.security.confluent_config()}


def _states(settings: Settings) -> dict[str, SubjectSnapshot]:  # pragma: no cover
    try:
        return desk.read_states(
            _consumer_config(settings),
            settings.app_id,
            load_policy(settings.policy_path),
            SystemClock().now(),
        )
    except (LookupError, TimeoutError) as exc:
        _fail(str(exc))


@click.group("desk")
def desk_group() -> None:
    """Privacy desk: inspect subjects, requests and answers (read-only)."""


@desk_group.command("subject")
@click.argument("subject_id")
def subject(subject_id: str) -> None:  # pragma: no cover - needs a broker
    """Show what is held on SUBJECT_ID, its open requests, deadlines, holds and commands."""
    states = _states(Settings())
    state = states.get(subject_id)
    if state is None:
        _fail(f"no state for subject {subject_id} (nothing held, or never seen)")
    click.echo(desk.describe_subject(state, SystemClock().now()), nl=False)


@desk_group.command("requests")
@click.option("--overdue", is_flag=True, help="Only requests past their due date.")
def requests_(overdue: bool) -> None:  # pragma: no cover - needs a broker
    """List open requests by due date."""
    states = _states(Settings())
    rows = desk.open_requests(states.values(), SystemClock().now(), overdue_only=overdue)
    click.echo(desk.format_requests(rows), nl=False)


@desk_group.command("parked")
@click.option(
    "--all", "include_undecodable", is_flag=True, help="Also list input that never decoded."
)
def parked(include_undecodable: bool) -> None:  # pragma: no cover - needs a broker
    """List parked items: accepted messages the pipeline could not process or deliver."""
    from schemas.deadletter import DeadLetter
    from streams.codec import Codec
    from streams.topics import TopicNames

    settings = Settings()
    codec = Codec.from_settings(settings)
    clock = SystemClock()

    def decode(value: bytes | None) -> object:
        return codec.decode(value, None, now=clock.now(), expected=(DeadLetter,), check_key=False)

    topic = TopicNames(settings.topic_prefix).dead_letter
    try:
        letters = list(desk.read_dead_letters(_consumer_config(settings), topic, decode))
    except (LookupError, TimeoutError) as exc:
        _fail(str(exc))
    click.echo(desk.format_parked(letters, include_undecodable=include_undecodable), nl=False)


@desk_group.command("render")
@click.argument("request_id")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="File to write (HTML access report, refusal letter or portability JSON).",
)
def render(request_id: str, out: Path) -> None:  # pragma: no cover - needs a broker
    """Render the latest answer to REQUEST_ID for the subject."""
    from schemas.responses import RequestResponse
    from streams.codec import Codec
    from streams.topics import TopicNames

    settings = Settings()
    codec = Codec.from_settings(settings)
    clock = SystemClock()

    def decode(value: bytes | None) -> object:
        return codec.decode(
            value, None, now=clock.now(), expected=(RequestResponse,), check_key=False
        )

    topic = TopicNames(settings.topic_prefix).responses
    try:
        responses = list(desk.read_responses(_consumer_config(settings), topic, decode))
    except (LookupError, TimeoutError) as exc:
        _fail(str(exc))
    response = desk.latest_response(responses, request_id)
    if response is None:
        _fail(f"no response for request {request_id} on {topic}")
    try:
        kind, text = desk.render_response(response)
    except ValueError as exc:
        _fail(str(exc))
    out.write_text(text, encoding="utf-8")
    click.echo(f"{kind} for {request_id} ({response.status.value}) written to {out}")
