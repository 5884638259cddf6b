"""The dead-letter path: bad input is kept with its reason, never dropped, never fatal.

``decode_or_dead_letter`` turns one raw Kafka message into either a
``Decoded`` model or a ``DeadLetter``; ``parked`` describes a message that
decoded but could not be processed or delivered; ``DeadLetterSink`` sends dead letters
to the dead-letter topic keyed by the original key; ``log_dead_letter``
writes one log line without any payload content.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.base import Frozen
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from streams.codec import Codec, DecodeError
from streams.logs import KEEP_EVERY_LINE
from streams.settings import Settings
from streams.topics import MURMUR2_PARTITIONER, TopicNames

__all__ = [
    "DeadLetter",
    "DeadLetterSink",
    "Decoded",
    "FailureClass",
    "ReasonClass",
    "decode_or_dead_letter",
    "log_dead_letter",
    "parked",
]

log = logging.getLogger(__name__)

# Room left for the dead letter's own fields (topic, reason, times, framing).
ENVELOPE_BYTES = 16 * 1024
MAX_KEPT_KEY_BYTES = 4 * 1024


@dataclass(frozen=True)
class Decoded:
    """A message that decoded and validated, with where it came from."""

    model: Frozen
    key: bytes | None
    topic: str
    partition: int
    offset: int


_default_codec: Codec | None = None


def _codec() -> Codec:
    global _default_codec
    if _default_codec is None:
        _default_codec = Codec()
    return _default_codec


def decode_or_dead_letter(
    raw_key: bytes | None,
    raw_value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    now: datetime,
    *,
    codec: Codec | None = None,
    expected: tuple[type[Frozen], ...] | None = None,
    check_key: bool = True,
    on_dead_letter: Callable[[str], None] | None = None,
) -> Decoded | DeadLetter:
    """Decode one raw message, or describe why it cannot be accepted.

    Never raises for bad input: every failure becomes a ``DeadLetter`` with a
    reason class (``on_dead_letter(reason_class)`` is called for the metric).
    Only ``streams.codec.RegistryUnavailable`` (an infrastructure problem, not
    a bad message) propagates, so the caller can retry instead of
    dead-lettering a good message.
    """
    codec = codec or _codec()
    try:
        model = codec.decode(raw_value, raw_key, now=now, expected=expected, check_key=check_key)
    except DecodeError as exc:
        dead = _dead_letter(
            raw_key,
            raw_value,
            topic,
            partition,
            offset,
            now,
            max_message_bytes=codec.max_message_bytes,
            reason_class=exc.reason_class,
            reason=exc.reason,
        )
        if on_dead_letter is not None:
            on_dead_letter(exc.reason_class.value)
        return dead
    return Decoded(model=model, key=raw_key, topic=topic, partition=partition, offset=offset)


def parked(
    raw_key: bytes | None,
    raw_value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    now: datetime,
    *,
    failure_class: FailureClass,
    reason: str,
    max_message_bytes: int,
    reason_class: ReasonClass = ReasonClass.INVALID_MODEL,
) -> DeadLetter:
    """A dead letter for a message that decoded but was parked: kept as it arrived,
    so it can be re-published once the cause is fixed. ``reason`` must not quote
    the payload (name exception types, topics and classes, not messages)."""
    return _dead_letter(
        raw_key,
        raw_value,
        topic,
        partition,
        offset,
        now,
        max_message_bytes=max_message_bytes,
        reason_class=reason_class,
        reason=reason,
        failure_class=failure_class,
    )


def _dead_letter(
    raw_key: bytes | None,
    raw_value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    now: datetime,
    *,
    max_message_bytes: int,
    reason_class: ReasonClass,
    reason: str,
    failure_class: FailureClass | None = None,
) -> DeadLetter:
    # Keep the dead letter itself within the message limit, so it can be
    # produced and read back like any other message.
    key = raw_key[:MAX_KEPT_KEY_BYTES] if raw_key is not None else None
    value_limit = max(0, max_message_bytes - ENVELOPE_BYTES - len(key or b""))
    return DeadLetter(
        # Kafka positions are always valid; clamp anyway so that building
        # the dead letter can never be what raises.
        topic=topic[:249] or "unknown",
        partition=max(partition, -1),
        offset=max(offset, -1),
        original_key=key,
        original_value=raw_value[:value_limit] if raw_value is not None else None,
        reason_class=reason_class,
        reason=reason[:1000] or reason_class.value,
        failed_at=now,
        original_value_size=len(raw_value) if raw_value is not None else None,
        failure_class=failure_class,
    )


def log_dead_letter(dead: DeadLetter, logger: logging.Logger | None = None) -> None:
    """One WARNING line: where, which class, why, how big. Never the payload."""
    (logger or log).warning(
        "dead-letter topic=%s partition=%d offset=%d class=%s parked=%s size=%s reason=%s",
        dead.topic,
        dead.partition,
        dead.offset,
        dead.reason_class.value,
        dead.failure_class.value if dead.failure_class is not None else "-",
        dead.original_value_size if dead.original_value_size is not None else "-",
        dead.reason,
        # Each line names one parked item: never counted away as a repeat.
        extra=KEEP_EVERY_LINE,
    )


class DeadLetterError(Exception):
    """A dead letter could not be written: the source offset must not be committed."""


class DeadLetterSink:
    """Writes dead letters to ``<prefix>.dead-letter``, keyed by the original key.

    Uses an idempotent producer and waits for the broker's acknowledgement in
    ``send``, so the caller can commit the source offset afterwards.
    """

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        *,
        codec: Codec | None = None,
        topic: str | None = None,
        timeout: float = 30.0,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.codec = codec or Codec.from_settings(settings)
        self.topic = topic or TopicNames(settings.topic_prefix).dead_letter
        self.timeout = timeout
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": MURMUR2_PARTITIONER,
            "message.max.bytes": settings.max_message_bytes + ENVELOPE_BYTES,
            **settings.security.confluent_config(),
            **(extra_config or {}),
        }
        self._producer = Producer(config)

    def send(self, dead: DeadLetter) -> tuple[int, int]:
        """Produce one dead letter and wait for it; returns (partition, offset)."""
        result: list[Message] = []
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            else:
                result.append(msg)

        self._producer.produce(
            self.topic, value=self.codec.encode(dead), key=dead.original_key, on_delivery=delivered
        )
        self._producer.flush(self.timeout)
        if errors:
            raise DeadLetterError(f"dead letter not written to {self.topic}: {errors[0]}")
        if not result:
            raise DeadLetterError(f"dead letter not confirmed within {self.timeout}s")
        msg = result[0]
        return int(msg.partition() or 0), int(msg.offset() or 0)

    def close(self) -> None:
        self._producer.flush(self.timeout)
