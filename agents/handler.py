"""The agent's body: decode, decide, emit, store. Thin by design.

All policy lives in the pure ``decide``; this module only moves bytes. The
order matters for at-least-once delivery: every outgoing message is confirmed
by the broker before the state is written, and Faust commits the source
offset only after the producer (which also carries the table changelog) is
flushed. A crash anywhere replays the event, and replays are harmless because
command ids are stable and decisions deduplicate event ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential
from tenacity.wait import wait_base

from agents.clock import Clock
from agents.metrics import LifecycleMetrics
from agents.rules.context import AuditEntry, Decision
from agents.rules.decide import decide, next_due
from agents.rules.policy import Policy
from agents.rules.state import SubjectState
from agents.scheduler import Schedule, ScheduleEntry
from schemas.audit import AuditSource
from schemas.base import Frozen
from schemas.commands import CommandAck
from schemas.deadletter import DeadLetter, ReasonClass
from schemas.events import INPUT_EVENTS, Event
from schemas.internal import DueTick
from schemas.responses import ResponseStatus
from streams.codec import Codec, RegistryUnavailable
from streams.deadletter import Decoded, decode_or_dead_letter, log_dead_letter
from streams.topics import TopicNames

log = logging.getLogger(__name__)

# The audit decision that marks a command given up on (agents.rules.commands).
ESCALATED = "command-escalated"
REGISTRY_RETRY_WAIT = wait_exponential(multiplier=0.5, max=30)


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def source(self) -> AuditSource:
        return AuditSource(self.topic, self.partition, self.offset)


@dataclass
class _Batch:
    """What a batch has decided so far: delivery futures, states to write."""

    pending: list[Awaitable[Any]] = field(default_factory=list)
    states: dict[bytes, SubjectState | None] = field(default_factory=dict)
    writes: dict[bytes, tuple[Any, SubjectState | None]] = field(default_factory=dict)


class Sender(Protocol):
    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        """Enqueue in call order; the returned awaitable completes when the broker has it."""


class AuditLog(Protocol):
    async def append(
        self,
        partition: int,
        entries: Sequence[AuditEntry],
        *,
        source: AuditSource,
        decided_at: datetime,
    ) -> Awaitable[Any]:
        """Chain ``entries``; the returned awaitable completes when they are committed."""


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
        subjects: MutableMapping[bytes, bytes],
        schedule_table: MutableMapping[bytes, bytes],
        schedule: Schedule,
        audit: AuditLog,
        send: Sender,
        registry_retry_wait: wait_base = REGISTRY_RETRY_WAIT,
        on_delivery_failure: Callable[[Exception], NoReturn] = exit_for_replay,
    ) -> None:
        self.codec = codec
        self.policy = policy
        self.clock = clock
        self.names = names
        self.metrics = metrics
        self.subjects = subjects
        self.schedule_table = schedule_table
        self.schedule = schedule
        self.audit = audit
        self.send = send
        self.registry_retry_wait = registry_retry_wait
        self.on_delivery_failure = on_delivery_failure
        self._acks_topic = names.acks
        self._ticks_topic = names.ticks

    def _expected(self, topic: str) -> tuple[type[Frozen], ...]:
        if topic == self._acks_topic:
            return (CommandAck,)
        if topic == self._ticks_topic:
            return (DueTick,)
        return INPUT_EVENTS

    async def handle(self, raw: RawMessage) -> None:
        await self.handle_batch([(raw, None)])

    async def handle_batch(
        self,
        items: Sequence[tuple[RawMessage, Any]],
        in_event: Callable[[Any], AbstractContextManager[object]] = lambda _: nullcontext(),
    ) -> None:
        """Decide a batch in order, wait once for all its outputs, then write states.

        One wait for the broker per batch instead of per message is what makes a
        batch cheaper; the order of the guarantees is unchanged. Each item carries
        an opaque token; ``in_event(token)`` is entered around that subject's table
        write (Faust writes a table in the context of an event of the same partition).
        """
        batch = _Batch()
        for raw, token in items:
            await self._decide_one(raw, token, batch)
        try:
            await self._confirm(batch.pending)
        except Exception as exc:
            self._fail_stop(exc)
        for key, (token, state) in batch.writes.items():
            with in_event(token):
                self._store(key, state)

    async def _decide_one(self, raw: RawMessage, token: Any, batch: _Batch) -> None:
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
        key = message.subject_id.encode()
        # A subject decided earlier in this batch continues from that decision.
        state = batch.states[key] if key in batch.states else self._load(key)
        if isinstance(message, CommandAck):
            self._observe_ack(state, message)
        try:
            decision = decide(state, message, now, self.policy)
        except Exception as exc:  # a message the rules cannot take must not stop the worker
            await self._enqueue_dead_letter(self._rejected(raw, message, exc, now), batch)
            return
        self._observe_requests(state, decision.state)
        try:
            batch.pending.extend(await self._enqueue(decision, raw.source, now))
        except Exception as exc:
            self._fail_stop(exc)
        batch.states[key] = decision.state
        batch.writes[key] = (token, decision.state)

    def _fail_stop(self, exc: Exception) -> NoReturn:
        # Faust acks an event whose agent raised, and would then commit its
        # offset: the event would be lost. Stopping the process at once means
        # nothing is committed; the restarted worker replays the event, which is
        # harmless (stable command ids; the audit chain head is re-read from the
        # topic, and the verifier recognises the replayed decisions by their source).
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

    def _observe_requests(self, before: SubjectState | None, after: SubjectState | None) -> None:
        """Count requests that opened or reached a final status in this decision."""
        if after is None:
            return
        old = {} if before is None else before.requests
        for request_id, request in after.requests.items():
            if request.placeholder:
                continue
            previous = old.get(request_id)
            if previous is None or previous.placeholder:
                self.metrics.observe_request_received(request.request_type.value)
            if request.final and (previous is None or not previous.final):
                self.metrics.observe_request_closed(
                    request.request_type.value, request.status.value
                )

    def _observe_ack(self, state: SubjectState | None, ack: CommandAck) -> None:
        tracked = None if state is None else state.commands.get(ack.command_id)
        if tracked is None:
            return  # a duplicate or unknown ack: decide() audits it
        latency = (ack.acked_at - tracked.sent_at).total_seconds()
        self.metrics.observe_ack(
            ack.system, tracked.command.action.value, ack.outcome.value, latency
        )

    def _load(self, key: bytes) -> SubjectState | None:
        blob = self.subjects.get(key)
        return None if blob is None else SubjectState.model_validate_json(blob)

    def _store(self, key: bytes, state: SubjectState | None) -> None:
        entry = None if state is None else schedule_entry(state)
        if state is None:
            self.subjects.pop(key, None)
        else:
            self.subjects[key] = state.model_dump_json().encode()
        if entry is None or entry.empty:
            self.schedule_table.pop(key, None)
            entry = None
        else:
            self.schedule_table[key] = entry.to_bytes()
        self.schedule.update(key.decode(), entry)

    async def _enqueue(
        self, decision: Decision, source: AuditSource, now: datetime
    ) -> list[Awaitable[Any]]:
        """Hand every output to the producer, in order; return their delivery futures."""
        pending: list[Awaitable[Any]] = []
        for command in decision.commands:
            topic = self.names.command(command.target_system)
            pending.append(
                await self.send(
                    topic, command.subject_id.encode(), self.codec.encode(command), None
                )
            )
            if command.attempt > 1:
                self.metrics.observe_resend(command.target_system, command.action.value)
            else:
                self.metrics.observe_command(
                    command.target_system, command.action.value, command.rule_id
                )
        for response in decision.responses:
            pending.append(
                await self.send(
                    self.names.responses,
                    response.subject_id.encode(),
                    self.codec.encode(response),
                    None,
                )
            )
        if decision.audit:
            # The audit chain is per partition: audit events go to the same
            # partition number as the input they record, which they name.
            pending.append(
                await self.audit.append(
                    source.partition, decision.audit, source=source, decided_at=now
                )
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


def schedule_entry(state: SubjectState) -> ScheduleEntry:
    when = next_due(state)
    return ScheduleEntry(
        due_ms=None if when is None else to_ms(when),
        requests=tuple(
            (r.request_type.value, to_ms(r.due_at))
            for r in state.requests.values()
            # Evidence held before its request arrives is not an open request,
            # and the legal clock of a request awaiting identity has not started.
            if not r.final
            and not r.placeholder
            and r.status is not ResponseStatus.AWAITING_IDENTITY
        ),
        outstanding=tuple(
            (c.command.target_system, to_ms(c.sent_at)) for c in state.commands.values()
        ),
    )
