"""Where each audit partition's hash chain currently ends.

The audit topic itself is the truth: after a (re)assignment the head of a
partition is read from its last record, so a replay after a crash appends to
the real end of the chain instead of forking it.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import Consumer, TopicPartition

from agents.audit_chain import ChainHead
from agents.clock import Clock
from schemas.audit import AuditEvent
from streams.codec import Codec


class TopicChainHeads:
    def __init__(
        self, *, topic: str, consumer_config: dict[str, str], codec: Codec, clock: Clock
    ) -> None:
        self.clock = clock
        self.topic = topic
        self.consumer_config = consumer_config
        self.codec = codec
        self._heads: dict[int, ChainHead] = {}

    async def head(self, partition: int) -> ChainHead:
        cached = self._heads.get(partition)
        if cached is None:
            loop = asyncio.get_running_loop()
            cached = await loop.run_in_executor(None, self._read_tail, partition)
            self._heads[partition] = cached
        return cached

    def advance(self, partition: int, head: ChainHead) -> None:
        self._heads[partition] = head

    def forget(self) -> None:
        """Drop every cached head (on rebalance another worker may have appended)."""
        self._heads.clear()

    def _read_tail(self, partition: int) -> ChainHead:
        consumer = Consumer(
            {**self.consumer_config, "enable.auto.commit": False, "group.id": "audit-head-reader"}
        )
        try:
            tp = TopicPartition(self.topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high <= low:
                return ChainHead.genesis()
            consumer.assign([TopicPartition(self.topic, partition, high - 1)])
            for _ in range(60):
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    event = self.codec.decode(
                        msg.value(),
                        None,
                        now=self.clock.now(),
                        expected=(AuditEvent,),
                        check_key=False,
                    )
                    assert isinstance(event, AuditEvent)
                    return ChainHead.of(event)
            # Transient (agents.failures): the broker did not deliver it in time.
            raise TimeoutError(f"could not read the last audit record of partition {partition}")
        finally:
            consumer.close()
