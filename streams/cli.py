"""``lifecycle publish`` and ``lifecycle tail``: the pipeline's wire format by hand.

The lead mounts the ``publish`` and ``tail`` click commands in ``agents.cli``.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import uuid
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, TextIO

import click
from pydantic import ValidationError

from schemas.base import Frozen
from schemas.deadletter import DeadLetter
from schemas.events import SourceWatermark
from schemas.registry import MODELS
from streams.codec import Codec
from streams.deadletter import Decoded, decode_or_dead_letter
from streams.publisher import Publisher, PublishError
from streams.settings import Settings

MODELS_BY_NAME: dict[str, type[Frozen]] = {}
for _model in MODELS:
    MODELS_BY_NAME[_model.__name__.lower()] = _model
    MODELS_BY_NAME[re.sub(r"(?<!^)(?=[A-Z])", "_", _model.__name__).lower()] = _model


def model_for(name: str) -> type[Frozen]:
    """``CallRecorded``, ``callrecorded`` or ``call_recorded`` -> the model class."""
    model = MODELS_BY_NAME.get(name.strip().lower())
    if model is None:
        known = ", ".join(sorted(m.__name__ for m in MODELS))
        raise click.BadParameter(f"unknown message type {name!r}; one of: {known}")
    return model


def jsonable(value: Any) -> Any:
    """Python values of a dumped model -> JSON values (bytes as base64)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _bootstrap(option: str | None, settings: Settings) -> str:
    bootstrap = option or settings.kafka_bootstrap_servers
    if not bootstrap:
        raise click.UsageError("no broker: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS")
    return bootstrap


def _message_id(model: Frozen) -> str | None:
    for name in type(model).model_fields:
        if name.endswith("_id") and name not in ("subject_id", "controller_id"):
            value = getattr(model, name)
            return str(value) if value is not None else None
    return None


@click.command("publish")
@click.argument("message_type")
@click.argument("payload", required=False)
@click.option(
    "--file", "-f", "file", type=click.File("r"), help="Read the JSON from a file ('-': stdin)."
)
@click.option("--topic", help="Topic to publish to (default: the event's input topic).")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def publish(
    message_type: str,
    payload: str | None,
    file: TextIO | None,
    topic: str | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Validate, encode and publish MESSAGE_TYPE from JSON (PAYLOAD, --file, or stdin).

    The JSON is one object or an array of objects. Prints one JSON line per
    message: its id, topic, partition and offset.
    """
    model = model_for(message_type)
    if payload is not None and file is not None:
        raise click.UsageError("give the JSON either as PAYLOAD or with --file, not both")
    text = payload if payload is not None else (file or sys.stdin).read()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    now = datetime.now(UTC)
    try:
        messages = [model.model_validate(item, context={"now": now}) for item in items]
    except ValidationError as exc:
        raise click.ClickException(f"invalid {model.__name__}:\n{exc}") from None
    settings = Settings()
    publisher = Publisher(_bootstrap(bootstrap, settings), settings, timeout=timeout)
    try:
        if model is SourceWatermark:
            # A heartbeat goes to every partition of its system's own topic.
            beats = [m for m in messages if isinstance(m, SourceWatermark)]
            pairs = [
                (m, d)
                for m in beats
                for d in publisher.publish_watermark(
                    m.source_system, m.watermark, event_id=m.event_id
                )
            ]
            messages = [m for m, _ in pairs]
            deliveries = [d for _, d in pairs]
        else:
            deliveries = publisher.publish_many(messages, topic=topic)
    except PublishError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        publisher.close()
    for message, delivery in zip(messages, deliveries, strict=True):
        click.echo(
            json.dumps(
                {
                    "type": type(message).__name__,
                    "id": _message_id(message),
                    "topic": delivery.topic,
                    "partition": delivery.partition,
                    "offset": delivery.offset,
                }
            )
        )


def render(result: Decoded | DeadLetter) -> dict[str, Any]:
    """One tailed message as a JSON object."""
    if isinstance(result, DeadLetter):
        # Could not be decoded: where it is and why, plus its raw bytes.
        return {
            "topic": result.topic,
            "partition": result.partition,
            "offset": result.offset,
            "error": result.reason_class.value,
            "reason": result.reason,
            "key": jsonable(result.original_key),
            "value_base64": jsonable(result.original_value),
        }
    body = jsonable(result.model.model_dump())
    out: dict[str, Any] = {
        "topic": result.topic,
        "partition": result.partition,
        "offset": result.offset,
        "key": _key_text(result.key),
        "type": type(result.model).__name__,
        "value": body,
    }
    if isinstance(result.model, DeadLetter):
        # A record of the dead-letter topic: show the reason up front.
        out["dead_letter"] = {
            "reason_class": result.model.reason_class.value,
            # Set for a parked item: it decoded, but could not be processed or delivered.
            "failure_class": (
                result.model.failure_class.value if result.model.failure_class else None
            ),
            "reason": result.model.reason,
            "source": f"{result.model.topic}/{result.model.partition}@{result.model.offset}",
        }
    return out


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(key).decode("ascii")


@click.command("tail")
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after N messages.")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Stop after this many seconds without a message.",
)
@click.option("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).")
def tail(
    topic: str,
    from_beginning: bool,
    max_messages: int | None,
    timeout: float,
    bootstrap: str | None,
) -> None:
    """Decode TOPIC's messages to JSON lines (undecodable ones with their reason).

    Reads with a throwaway consumer group and commits nothing.
    """
    from confluent_kafka import Consumer

    settings = Settings()
    codec = Codec.from_settings(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": _bootstrap(bootstrap, settings),
            "group.id": f"lifecycle-tail-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            **settings.security.confluent_config(),
        }
    )
    seen = 0
    try:
        consumer.subscribe([topic])
        while max_messages is None or seen < max_messages:
            msg = consumer.poll(timeout)
            if msg is None:
                break
            if msg.error() is not None:
                raise click.ClickException(f"consumer error: {msg.error()}")
            result = decode_or_dead_letter(
                msg.key(),
                msg.value(),
                str(msg.topic()),
                int(msg.partition() or 0),
                int(msg.offset() or 0),
                datetime.now(UTC),
                codec=codec,
            )
            click.echo(json.dumps(render(result)))
            seen += 1
    finally:
        consumer.close()
