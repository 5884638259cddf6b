"""The agent's body: decode, decide, emit, store. Thin by design.

All policy lives in the pure ``decide``; this module only moves bytes. The
order matters for at-least-once delivery: every outgoing message is confirmed
by the broker before the state is written (``StateStore.persist``: changelog
confirmed, then the local store), and the source offsets are committed only
after that. A crash anywhere replays the event, and replays are harmless
because command ids are stable and decisions deduplicate event ids.

A decision reads the subject's entries through a layer holding what earlier
decisions of the same batch wrote. A subject still in the previous one-value
format is converted when first met (``agents.store.legacy``). A stored value
that cannot be read is quarantined (``_quarantine``): the value and the message
are dead-lettered with the reason and counted, and the batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential
from tenacity.wait import wait_base

from agents.audit_chain import ChainHead, link
from agents.clock import Clock
from agents.metrics import LifecycleMetrics
from agents.rules.context import Decision
from agents.rules.decide import decide
from agents.rules.policy import Policy
from agents.store import keys, legacy
from agents.store.base import MAX_MESSAGE_BYTES, StateStore
from agents.store.codec import UnreadableState
from agents.store.layer import Layer, Write
from schemas.base import Frozen
from schemas.commands import CommandAck
from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import INPUT_EVENTS, Event
from schemas.internal import DueTick
from streams.codec import Codec, RegistryUnavailable
from streams.deadletter import ENVELOPE_BYTES, Decoded, decode_or_dead_letter, log_dead_letter
from streams.topics import TopicNames

log = logging.getLogger(__name__)

# The audit decision that marks a command given up on (agents.rules.commands).
ESCALATED = "command-escalated"
REGISTRY_RETRY_WAIT = wait_exponential(multiplier=0.5, max=30)

Output = tuple[str, bytes | None, bytes, int | None]  # topic, key, value, partition


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class _Subject:
    """One subject's writes in a batch, last value per key, in first-write order."""

    partition: int
    writes: dict[bytes, bytes | None] = field(default_factory=dict)

    def ordered(self) -> list[Write]:
        # Entries first, then the header, then the seen-event marks: a crash that
        # loses the tail never marks an event seen whose effects were lost.
        body: list[Write] = []
        header: list[Write] = []
        seen: list[Write] = []
        for key, value in self.writes.items():
            ns = key[:1]
            (header if ns == keys.HEADER else seen if ns == keys.SEEN else body).append(
                (key, value)
            )
        return body + header + seen


@dataclass
class _Batch:
    """What a batch has decided so far: delivery futures, read layers, writes."""

    store: StateStore
    pending: list[Awaitable[Any]] = field(default_factory=list)
    layers: dict[int, Layer] = field(default_factory=dict)
    subjects: dict[str, _Subject] = field(default_factory=dict)

    def layer(self, partition: int) -> Layer:
        if partition not in self.layers:
            self.layers[partition] = Layer(self.store.entries(partition))
        return self.layers[partition]

    def write(self, subject_id: str, partition: int, writes: list[Write]) -> None:
        self.layer(partition).apply(writes)
        group = self.subjects.setdefault(subject_id, _Subject(partition))
        for key, value in writes:
            group.writes[key] = value

    def by_partition(self) -> dict[int, list[Write]]:
        out: dict[int, list[Write]] = {}
        for group in self.subjects.values():
            out.setdefault(group.partition, []).extend(group.ordered())
        return out


class OversizeOutput(Exception):
    """A decision would write a message over ``MAX_MESSAGE_BYTES``: a bug, never sent."""


class Sender(Protocol):
    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        """Enqueue in call order; the returned awaitable completes when the broker has it."""


class ChainHeads(Protocol):
    async def head(self, partition: int) -> ChainHead: ...

    def advance(self, partition: int, head: ChainHead) -> None: ...


EXIT_DELIVERY_FAILED = 75  # EX_TEMPFAIL: a supervisor should restart the worker


def exit_for_replay(exc: Exception) -> NoReturn:
    """Leave without running shutdown hooks, so no offset is committed."""
    logging.shutdown()
    os._exit(EXIT_DELIVERY_FAILED)


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class Handler:
    """Processes one raw message end to end. One instance per worker."""

    def __init__(
        self,
        *,
        codec: Codec,
        policy: Policy,
        clock: Clock,
        names: TopicNames,
        metrics: LifecycleMetrics,
        audit_key: bytes,
        store: StateStore,
        chain: ChainHeads,
        send: Sender,
        state_topic: str = "state",
        registry_retry_wait: wait_base = REGISTRY_RETRY_WAIT,
        on_delivery_failure: Callable[[Exception], NoReturn] = exit_for_replay,
    ) -> None:
        self.codec = codec
        self.policy = policy
        self.clock = clock
        self.names = names
        self.metrics = metrics
        self.audit_key = audit_key
        self.store = store
        self.chain = chain
        self.send = send
        # Where a quarantined value came from (the state changelog), for its dead letter.
        self.state_topic = state_topic
        self.registry_retry_wait = registry_retry_wait
        self.on_delivery_failure = on_delivery_failure
        self._acks_topic = names.acks
        self._ticks_topic = names.ticks
        self._quarantined: set[bytes] = set()

    def _expected(self, topic: str) -> tuple[type[Frozen], ...]:
        if topic == self._acks_topic:
            return (CommandAck,)
        if topic == self._ticks_topic:
            return (DueTick,)
        return INPUT_EVENTS

    async def handle(self, raw: RawMessage) -> None:
        await self.handle_batch([raw])

    async def handle_batch(self, items: Sequence[RawMessage]) -> None:
        """Decide a batch in order, wait once for all its outputs, then persist the state.

        One wait for the broker per batch instead of per message is what makes a
        batch cheaper; the order of the guarantees is unchanged: outputs confirmed,
        then the state persisted (each subject's writes in its own partition), and
        only then may the caller commit the batch's offsets.
        """
        batch = _Batch(self.store)
        for raw in items:
            await self._decide_one(raw, batch)
        try:
            await self._confirm(batch.pending)
        except Exception as exc:
            self._fail_stop(exc)
        try:
            await self.store.persist(batch.by_partition())
        except Exception as exc:
            self._fail_stop(exc)

    async def _decide_one(self, raw: RawMessage, batch: _Batch) -> None:
        now = self.clock.now()
        decoded = await self._decode(raw, now)
        if isinstance(decoded, DeadLetter):
            await self._enqueue_dead_letter(decoded, batch)
            return
        message = decoded.model
        assert isinstance(message, Event | CommandAck | DueTick)
        self.metrics.observe_event(raw.topic, type(message).__name__)
        if isinstance(message, DueTick):
            self.metrics.observe_timer_fired((now - message.due_at).total_seconds())
        subject_id = message.subject_id
        # A subject decided earlier in this batch continues from that decision.
        layer = batch.layer(raw.partition)
        try:
            migrated = await self._migrate(layer, raw, subject_id, now, batch)
            decision = decide(layer, message, now, self.policy)
        except UnreadableState as exc:
            await self._quarantine(raw, message, exc, now, batch)
            return
        except Exception as exc:  # a message the rules cannot take must not stop the worker
            await self._enqueue_dead_letter(self._rejected(raw, message, exc, now), batch)
            return
        head = await self.chain.head(raw.partition) if decision.audit else None
        try:
            outputs, head = self._outputs(decision, raw.partition, now, head)
        except OversizeOutput as exc:
            await self._enqueue_dead_letter(self._rejected(raw, message, exc, now), batch)
            return
        try:
            batch.pending.extend(await self._enqueue(outputs, decision))
        except Exception as exc:
            self._fail_stop(exc)
        if head is not None:
            self.chain.advance(raw.partition, head)
        batch.write(subject_id, raw.partition, migrated + decision.writes)
        self._observe(decision)

    async def _migrate(
        self, layer: Layer, raw: RawMessage, subject_id: str, now: datetime, batch: _Batch
    ) -> list[Write]:
        """Convert a subject still stored in the previous format (once), into ``layer``."""
        legacy_key = subject_id.encode()
        old = layer.get(legacy_key)
        if old is None:
            return []
        if layer.get(keys.header(subject_id)) is None:
            writes = legacy.convert(old, subject_id=subject_id, policy=self.policy, now=now)
        else:
            # Both formats at once: two worker versions ran together (unsupported).
            # The keyed state is the one carried on; the old value is parked, not lost.
            await self._park_value(
                raw, legacy_key, old, "format-0 value beside keyed state", now, batch
            )
            writes = [(legacy_key, None)]
        layer.apply(writes)
        return writes

    def _fail_stop(self, exc: Exception) -> NoReturn:
        # Faust acks an event whose agent raised, and would then commit its
        # offset: the event would be lost. Stopping the process at once means
        # nothing is committed; the restarted worker replays the event, which is
        # harmless (stable command ids, chain head re-read from the audit topic).
        log.critical(
            "could not deliver the outputs of a decision (%s); stopping the worker so "
            "the event is replayed",
            type(exc).__name__,
        )
        self.on_delivery_failure(exc)
        raise AssertionError("on_delivery_failure must not return")

    async def _decode(self, raw: RawMessage, now: datetime) -> Decoded | DeadLetter:
        # An unreachable schema registry is not bad input: dead-lettering a good
        # message would lose it, so the partition waits and retries instead.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RegistryUnavailable),
            wait=self.registry_retry_wait,
            before_sleep=lambda state: log.warning(
                "schema registry unavailable; retrying (attempt %d)", state.attempt_number
            ),
        ):
            with attempt:
                return decode_or_dead_letter(
                    raw.key,
                    raw.value,
                    raw.topic,
                    raw.partition,
                    raw.offset,
                    now,
                    codec=self.codec,
                    expected=self._expected(raw.topic),
                    on_dead_letter=lambda r: self.metrics.observe_dead_letter(raw.topic, r),
                )
        raise AssertionError("unreachable: AsyncRetrying retries until it returns")

    def _rejected(
        self, raw: RawMessage, message: Frozen, exc: Exception, now: datetime
    ) -> DeadLetter:
        # The exception's message may quote field values (personal data): only
        # its class goes into the reason; the traceback is logged at DEBUG.
        log.debug("rules raised for %s", type(message).__name__, exc_info=True)
        self.metrics.observe_dead_letter(raw.topic, ReasonClass.INVALID_MODEL.value)
        return DeadLetter(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            original_key=raw.key,
            original_value=raw.value,
            reason_class=ReasonClass.INVALID_MODEL,
            reason=f"the rules rejected this {type(message).__name__}: {type(exc).__name__}",
            failed_at=now,
            original_value_size=len(raw.value or b""),
        )

    async def _quarantine(
        self, raw: RawMessage, message: Frozen, exc: UnreadableState, now: datetime, batch: _Batch
    ) -> None:
        """A stored value cannot be read: the value (once) and the message are
        dead-lettered with the reason and counted; the subject's messages wait
        there (replayable) until the value is repaired, and the partition goes on."""
        self.metrics.observe_unreadable_state()
        log.error(
            "unreadable stored state in partition %d: %s; the subject's messages are "
            "dead-lettered until it is repaired",
            raw.partition,
            exc.reason,
        )
        if exc.key not in self._quarantined:
            self._quarantined.add(exc.key)
            await self._park_value(
                raw, exc.key, exc.raw, f"unreadable stored state: {exc.reason}", now, batch
            )
        self.metrics.observe_dead_letter(raw.topic, ReasonClass.INVALID_MODEL.value)
        await self._enqueue_dead_letter(
            DeadLetter(
                topic=raw.topic,
                partition=raw.partition,
                offset=raw.offset,
                original_key=raw.key,
                original_value=raw.value,
                reason_class=ReasonClass.INVALID_MODEL,
                reason=(
                    f"the subject's stored state is unreadable ({exc.reason}); replay this "
                    f"{type(message).__name__} once it is repaired"
                )[:1000],
                failed_at=now,
                original_value_size=len(raw.value or b""),
            ),
            batch,
        )

    async def _park_value(
        self, raw: RawMessage, key: bytes, value: bytes, reason: str, now: datetime, batch: _Batch
    ) -> None:
        """A stored value to the dead-letter topic, with its store key and the reason."""
        key = key[:4096]
        limit = max(0, self.codec.max_message_bytes - ENVELOPE_BYTES - len(key))
        self.metrics.observe_dead_letter(self.state_topic, ReasonClass.INVALID_MODEL.value)
        await self._enqueue_dead_letter(
            DeadLetter(
                topic=self.state_topic,
                partition=raw.partition,
                offset=-1,
                original_key=key,
                original_value=value[:limit],
                reason_class=ReasonClass.INVALID_MODEL,
                reason=reason[:1000],
                failed_at=now,
                original_value_size=len(value),
            ),
            batch,
        )

    async def _enqueue_dead_letter(self, dead: DeadLetter, batch: _Batch) -> None:
        log_dead_letter(dead, log)
        try:
            batch.pending.append(
                await self.send(
                    self.names.dead_letter, dead.original_key, self.codec.encode(dead), None
                )
            )
        except Exception as exc:
            self._fail_stop(exc)

    def _observe(self, decision: Decision) -> None:
        notes = decision.notes
        for request_type in notes.requests_opened:
            self.metrics.observe_request_received(request_type)
        for request_type, status in notes.requests_closed:
            self.metrics.observe_request_closed(request_type, status)
        for system, action, outcome, latency in notes.acks:
            self.metrics.observe_ack(system, action, outcome, latency)

    def _outputs(
        self, decision: Decision, partition: int, now: datetime, head: ChainHead | None
    ) -> tuple[list[Output], ChainHead | None]:
        """Every output of a decision, encoded in order (and the audit chain's new
        head). Raises ``OversizeOutput``, before anything is sent, when one
        message or state entry would pass ``MAX_MESSAGE_BYTES``."""
        out: list[Output] = []
        for command in decision.commands:
            topic = self.names.command(command.target_system)
            out.append((topic, command.subject_id.encode(), self.codec.encode(command), None))
        for response in decision.responses:
            value = self.codec.encode(response)
            out.append((self.names.responses, response.subject_id.encode(), value, None))
        if decision.more:
            # Work is left (a page of a long job): the subject is ticked again at once.
            tick = DueTick(subject_id=decision.subject_id, due_at=now, sent_at=now)
            out.append((self._ticks_topic, tick.subject_id.encode(), self.codec.encode(tick), None))
        if head is not None:
            # The chain head is per partition; audit events go to the same
            # partition number as the event that caused them.
            for entry in decision.audit:
                event = link(head, entry, partition=partition, key=self.audit_key, decided_at=now)
                head = ChainHead.of(event)
                out.append((self.names.audit, None, self.codec.encode(event), partition))
        for topic, _key, value, _partition in out:
            if len(value) > MAX_MESSAGE_BYTES:
                raise OversizeOutput(f"{len(value)} bytes to {topic}")
        for key, stored in decision.writes:
            if stored is not None and len(key) + len(stored) > MAX_MESSAGE_BYTES:
                raise OversizeOutput(f"a state entry of {len(stored)} bytes")
        return out, head

    async def _enqueue(self, outputs: list[Output], decision: Decision) -> list[Awaitable[Any]]:
        """Hand every output to the producer, in order; return their delivery futures."""
        pending = [await self.send(topic, key, value, p) for topic, key, value, p in outputs]
        for command in decision.commands:
            if command.attempt > 1:
                self.metrics.observe_resend(command.target_system, command.action.value)
            else:
                self.metrics.observe_command(
                    command.target_system, command.action.value, command.rule_id
                )
        for entry in decision.audit:
            self.metrics.observe_decision(entry.rule_id, entry.decision)
            if entry.decision == ESCALATED:
                self.metrics.observe_escalation(
                    entry.details.get("system", "unknown"),
                    entry.details.get("action", "unknown"),
                )
            self.metrics.observe_audit(entry.decision)
        return pending

    @staticmethod
    async def _confirm(pending: list[Awaitable[Any]]) -> None:
        # Wait for the broker to confirm every record before state is written
        # and before the offset can be committed.
        if pending:
            await asyncio.gather(*pending)
