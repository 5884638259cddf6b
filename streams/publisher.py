"""Publisher SDK: how a publishing system sends events into the pipeline.

    with Publisher(bootstrap, settings) as publisher:
        delivery = publisher.publish(event)   # waits for the broker's ack

Events are validated (they are pydantic models), encoded with the pipeline's
codec, keyed by ``subject_id`` and sent through an idempotent producer
(``acks=all``, murmur2 partitioner so confluent-kafka and Faust agree on the
partition). ``publish`` returns only once the broker has confirmed the
write, or raises ``PublishError``.

A publishing system also says how far it has published (N9: erasure,
restriction and objection answers wait for it, docs/event-time.md)::

    publisher.publish_watermark("web-analytics", up_to)   # every partition of its topic

meaning every event of that system with an event time at or before ``up_to``
has been published. Systems send it periodically (a heartbeat, e.g. each
minute with the time of their latest published event, or the current time when
they have published everything) and after a backlog is flushed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.base import Frozen
from schemas.events import SourceWatermark
from streams.codec import Codec
from streams.settings import Settings
from streams.topics import MURMUR2_PARTITIONER, TopicNames

DEFAULT_TIMEOUT = 30.0


class PublishError(Exception):
    """A message was not confirmed by the broker (or could not be sent at all)."""


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored a published message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


def producer_config(bootstrap: str, settings: Settings) -> dict[str, Any]:
    """librdkafka settings every pipeline producer uses."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": MURMUR2_PARTITIONER,
        "linger.ms": 5,
        **settings.security.confluent_config(),
    }


class Publisher:
    """Idempotent, confirmed publishing of pipeline messages."""

    def __init__(
        self,
        bootstrap: str,
        settings: Settings | None = None,
        *,
        codec: Codec | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.codec = codec or Codec.from_settings(self.settings)
        self.topics = TopicNames(self.settings.topic_prefix)
        self.timeout = timeout
        self._producer = Producer(
            {**producer_config(bootstrap, self.settings), **(extra_config or {})}
        )

    def default_topic(self, message: Frozen) -> str:
        source = getattr(message, "source_system", None)
        if not isinstance(source, str):
            raise PublishError(f"{type(message).__name__} has no default topic; pass topic=")
        return self.topics.input(source)

    def publish(self, message: Frozen, topic: str | None = None) -> Delivery:
        """Send one message and wait for the broker's acknowledgement."""
        return self.publish_many([message], topic=topic)[0]

    def publish_many(self, messages: Iterable[Frozen], topic: str | None = None) -> list[Delivery]:
        """Send messages in order and wait for all; raises if any was not confirmed.

        Messages for one subject keep their order (same key, same partition,
        idempotent producer). On failure nothing is rolled back: messages
        confirmed before the error are in the topic (``PublishError.deliveries``).
        """
        batch = list(messages)
        results: list[Delivery | KafkaError | None] = [None] * len(batch)

        def on_delivery(index: int) -> Any:
            def callback(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    results[index] = err
                else:
                    results[index] = Delivery(
                        topic=str(msg.topic()),
                        partition=int(msg.partition() or 0),
                        offset=int(msg.offset() or 0),
                        key=msg.key(),
                    )

            return callback

        for index, message in enumerate(batch):
            target = topic or self.default_topic(message)
            value = self.codec.encode(message)
            self._produce(target, value, self.codec.key_for(message), on_delivery(index))
        remaining = self._producer.flush(self.timeout)
        return _collect(results, remaining, self.timeout)

    def publish_watermark(
        self, source_system: str, watermark: datetime, *, event_id: str | None = None
    ) -> list[Delivery]:
        """Tell every partition of ``source_system``'s input topic that every event of
        the system with an event time at or before ``watermark`` has been published.

        Sent after the events it vouches for, on the same topic, so in each partition
        the worker reads it after them. Returns one delivery per partition."""
        heartbeat = SourceWatermark(
            event_id=event_id or f"wm-{uuid.uuid4().hex}",
            source_system=source_system,
            watermark=watermark,
        )
        topic = self.topics.input(source_system)
        try:
            metadata = self._producer.list_topics(topic, timeout=self.timeout)
        except KafkaException as exc:
            raise PublishError(f"cannot read the partitions of {topic}: {exc}") from exc
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            raise PublishError(f"topic {topic} is not available")
        value = self.codec.encode(heartbeat)
        partitions = sorted(described.partitions)
        results: list[Delivery | KafkaError | None] = [None] * len(partitions)

        def on_delivery(index: int) -> Any:
            def callback(err: KafkaError | None, msg: Message) -> None:
                results[index] = (
                    err
                    if err is not None
                    else Delivery(
                        topic=str(msg.topic()),
                        partition=int(msg.partition() or 0),
                        offset=int(msg.offset() or 0),
                        key=msg.key(),
                    )
                )

            return callback

        for index, partition in enumerate(partitions):
            self._produce(topic, value, None, on_delivery(index), partition=partition)
        remaining = self._producer.flush(self.timeout)
        return _collect(results, remaining, self.timeout)

    def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        callback: Any,
        *,
        partition: int | None = None,
    ) -> None:
        for _ in range(100):
            try:
                if partition is None:
                    self._producer.produce(topic, value=value, key=key, on_delivery=callback)
                else:
                    self._producer.produce(
                        topic, value=value, key=key, partition=partition, on_delivery=callback
                    )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room.
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise PublishError(f"cannot send to {topic}: {exc}") from exc
        raise PublishError(f"local producer queue stayed full while sending to {topic}")

    def close(self) -> None:
        self._producer.flush(self.timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PublishBatchError(PublishError):
    def __init__(self, message: str, deliveries: Sequence[Delivery | None]) -> None:
        super().__init__(message)
        self.deliveries = list(deliveries)


def _collect(
    results: list[Delivery | KafkaError | None], remaining: int, timeout: float
) -> list[Delivery]:
    failures = [(i, r) for i, r in enumerate(results) if not isinstance(r, Delivery)]
    if not failures:
        return [r for r in results if isinstance(r, Delivery)]
    confirmed = [r if isinstance(r, Delivery) else None for r in results]
    index, first = failures[0]
    if first is None:
        why = f"not confirmed within {timeout}s ({remaining} still in flight)"
    else:
        why = f"{first.name()}: {first.str()}"
    raise PublishBatchError(
        f"{len(failures)} of {len(results)} message(s) not delivered; first (#{index}): {why}",
        confirmed,
    )
