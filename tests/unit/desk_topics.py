"""What a worker writes to its topics for ``Harness`` decisions, as read-model messages.

``Recorder`` turns decisions into the messages the desk's projector would read:
the ``subjects`` changelog entries a decision wrote (keys below the subject,
tombstones included), commands, responses, audit events chained per
partition, acknowledgements and dead letters, each at the next offset of its
topic partition.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from agents.audit.chain import ChainHead, link
from agents.rules.testing import Harness, Step
from desk.readmodel.store import Message
from desk.readmodel.topics import DeskTopics
from schemas.base import Frozen
from schemas.commands import CommandAck
from streams.codec import Codec

AUDIT_KEY = b"unit-test-audit-key"
TOPICS = DeskTopics(prefix="unit", app_id="unit-app")


class Recorder:
    def __init__(self, topics: DeskTopics = TOPICS, key: bytes = AUDIT_KEY) -> None:
        self.topics, self.key = topics, key
        self.codec = Codec()
        self.next: dict[tuple[str, int], int] = defaultdict(int)
        self.heads: dict[int, ChainHead] = {}
        self.log: list[Message] = []
        self._taken = 0

    def add(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int = 0
    ) -> Message:
        offset = self.next[(topic, partition)]
        self.next[(topic, partition)] = offset + 1
        message = Message(topic, partition, offset, key, value)
        self.log.append(message)
        return message

    def model(self, topic: str, model: Frozen, partition: int = 0) -> Message:
        return self.add(topic, self.codec.key_for(model), self.codec.encode(model), partition)

    def decision(
        self, h: Harness, d: Step, *, partition: int = 0, at: datetime | None = None
    ) -> None:
        names = self.topics.names
        for command in d.commands:
            self.model(names.command(command.target_system), command, partition)
        for response in d.responses:
            self.model(names.responses, response, partition)
        head = self.heads.get(partition, ChainHead.genesis())
        for entry in d.audit:
            event = link(
                head, entry, partition=partition, key=self.key, decided_at=at or h.clock.now()
            )
            head = ChainHead.of(event)
            self.model(names.audit, event, partition)
        self.heads[partition] = head
        for key, value in d.writes:
            self.add(self.topics.state[0], key, value, partition)

    def send(self, h: Harness, message: object, *, partition: int = 0) -> Step:
        """``h.send(message)`` and record what the worker would write for it."""
        if isinstance(message, CommandAck):
            self.model(self.topics.names.acks, message, partition)
        d = h.send(message)  # type: ignore[arg-type]
        self.decision(h, d, partition=partition)
        return d

    def take(self) -> list[Message]:
        """Messages recorded since the last ``take``."""
        out = self.log[self._taken :]
        self._taken = len(self.log)
        return out
