"""The agent's body: decode, decide, emit, store. Thin by design.

All policy lives in the pure ``decide``; this module only moves bytes. The
order matters for at-least-once delivery: every outgoing message is confirmed
by the broker before the state is written, and Faust commits the source
offset only after the producer (which also carries the table changelog) is
flushed. A crash anywhere replays the event, and replays are harmless because
command ids are stable and decisions deduplicate event ids.

Failures are isolated per event (``agents.failures``): a transient one is
retried, and if it does not heal the worker stops without committing (the
batch is replayed); a permanent one parks that event, or the one output that
cannot be delivered, on the dead-letter topic, and the batch goes on. Faust
acknowledges a batch only when ``handle_batch`` returns, and it returns only
once every output, dead letter and state of the batch is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeVar

from agents.audit_writer import AuditWriteError
from agents.clock import Clock
from agents.failures import Failure, RetryPolicy, Step, StepFailed, classify, retrying
from agents.metrics import LifecycleMetrics, never_raises
from agents.rules.context import AuditEntry, Decision
from agents.rules.decide import decide, next_due
from agents.rules.policy import Policy
from agents.rules.state import SubjectState
from agents.scheduler import Schedule, ScheduleEntry
from schemas.audit import AuditSource
from schemas.base import Frozen
from schemas.commands import CommandAck
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import INPUT_EVENTS, Event
from schemas.internal import DueTick
from schemas.responses import ResponseStatus
from streams.codec import Codec
from streams.deadletter import Decoded, decode_or_dead_letter, log_dead_letter, parked
from streams.topics import TopicNames

log = logging.getLogger(__name__)
T = TypeVar("T")

# The audit decision that marks a command given up on (agents.rules.commands).
ESCALATED = "command-escalated"


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


@dataclass(frozen=True)
class _Output:
    """A message handed to the producer for an item, kept to name it if delivery fails."""

    item: RawMessage
    topic: str
    delivery: Awaitable[Any]


@dataclass
class _Write:
    """A subject's state to write, in the context of its latest event."""

    token: Any
    state: SubjectState | None
    # Every item of the batch whose decision this state carries.
    items: list[RawMessage]


@dataclass
class _Batch:
    """What a batch has decided so far: delivery futures, states to write."""

    pending: list[_Output] = field(default_factory=list)
    states: dict[bytes, SubjectState | None] = field(default_factory=dict)
    writes: dict[bytes, _Write] = field(default_factory=dict)


class MustStop(Exception):
    """Something of the batch cannot be made durable, even after retries."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


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
        retry: RetryPolicy | None = None,
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
        self.retry = retry or RetryPolicy()
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

        Whatever fails while one item is handled affects that item only (see the
        module doc). Returns only when everything of the batch is durable;
        otherwise the worker stops without committing.
        """
        batch = _Batch()
        try:
            for raw, token in items:
                await self._isolated(raw, token, batch)
            await self._confirm(batch)
            failed: list[tuple[RawMessage, Failure]] = []
            for key, write in batch.writes.items():
                with in_event(write.token):
                    failure = await self._store_durably(key, write.state)
                if failure is not None:
                    failed.extend((item, failure) for item in write.items)
            for item, failure in failed:
                await self._park(item, Step.STORE, failure, batch)
            await self._confirm(batch)  # the dead letters of items parked while storing
        except MustStop as stop:
            self._fail_stop(stop.cause)

    async def _isolated(self, raw: RawMessage, token: Any, batch: _Batch) -> None:
        """Handle one item; if it fails for good, park it and let the batch go on."""
        try:
            await self._decide_one(raw, token, batch)
        except MustStop:
            raise
        except StepFailed as failed:
            if failed.failure.transient:
                raise MustStop(failed.cause) from failed
            await self._park(raw, failed.step, failed.failure, batch)
        except Exception as exc:
            failure = classify(exc, Step.DECIDE)
            if failure.transient:
                raise MustStop(exc) from exc
            log.debug("handling an item raised", exc_info=True)
            await self._park(raw, Step.DECIDE, failure, batch)

    async def _decide_one(self, raw: RawMessage, token: Any, batch: _Batch) -> None:
        now = self.clock.now()
        decoded = await self._decode(raw, now)
        if isinstance(decoded, DeadLetter):
            await self._send_dead_letter(raw, decoded, batch)
            return
        message = decoded.model
        assert isinstance(message, Event | CommandAck | DueTick)
        self.metrics.observe_event(raw.topic, type(message).__name__)
        if isinstance(message, DueTick):
            self.metrics.observe_timer_fired((now - message.due_at).total_seconds())
        key = message.subject_id.encode()
        # A subject decided earlier in this batch continues from that decision.
        state = batch.states[key] if key in batch.states else await self._load_durably(key)
        if isinstance(message, CommandAck):
            self._observe_ack(state, message)
        try:
            decision = decide(state, message, now, self.policy)
        except Exception as exc:  # a message the rules cannot take must not stop the worker
            await self._send_dead_letter(raw, self._rejected(raw, message, exc, now), batch)
            return
        self._observe_requests(state, decision.state)
        await self._enqueue(decision, raw, now, batch)
        batch.states[key] = decision.state
        earlier = batch.writes[key].items if key in batch.writes else []
        batch.writes[key] = _Write(token, decision.state, [*earlier, raw])

    def _fail_stop(self, exc: Exception) -> NoReturn:
        # Faust acks an event whose agent raised, and would then commit its
        # offset: the event would be lost. Stopping the process at once means
        # nothing is committed; the restarted worker replays the event, which is
        # harmless (stable command ids; the audit chain head is re-read from the
        # topic, and the verifier recognises the replayed decisions by their source).
        log.critical(
            "could not make a batch durable (%s), transient failure outlasted its "
            "retries; stopping the worker so the batch is replayed",
            type(exc).__name__,
        )
        self.on_delivery_failure(exc)
        raise AssertionError("on_delivery_failure must not return")

    async def _decode(self, raw: RawMessage, now: datetime) -> Decoded | DeadLetter:
        # An unreachable schema registry is not bad input: dead-lettering a good
        # message would lose it, so the partition waits and retries instead.
        async def decode() -> Decoded | DeadLetter:
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

        return await self._retrying(Step.DECODE, decode)

    async def _retrying(self, step: Step, call: Callable[[], Awaitable[T]]) -> T:
        return await retrying(
            step, call, self.retry, lambda s, _failure: self.metrics.observe_retry(s.value)
        )

    async def _load_durably(self, key: bytes) -> SubjectState | None:
        async def load() -> SubjectState | None:
            return self._load(key)

        return await self._retrying(Step.LOAD, load)

    async def _store_durably(self, key: bytes, state: SubjectState | None) -> Failure | None:
        """Write a state; the permanent failure if it cannot be written."""

        async def store() -> None:
            self._store(key, state)

        try:
            await self._retrying(Step.STORE, store)
        except StepFailed as failed:
            if failed.failure.transient:
                raise MustStop(failed.cause) from failed
            return failed.failure
        return None

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

    async def _send_dead_letter(self, raw: RawMessage, dead: DeadLetter, batch: _Batch) -> None:
        """Hand a dead letter to the producer. If even that fails, nothing can park
        the item: the worker must stop rather than commit past it."""
        log_dead_letter(dead, log)
        value = self.codec.encode(dead)

        async def send() -> Awaitable[Any]:
            return await self.send(self.names.dead_letter, dead.original_key, value, None)

        try:
            delivery = await self._retrying(Step.SEND, send)
        except StepFailed as failed:
            raise MustStop(failed.cause) from failed
        batch.pending.append(_Output(raw, self.names.dead_letter, delivery))

    async def _park(self, raw: RawMessage, step: Step, failure: Failure, batch: _Batch) -> None:
        """Park an item that failed for good: its state is not written by this batch."""
        await self._park_with(raw, failure, f"{step.value} failed: {failure.reason}", batch)

    async def _park_output(
        self, raw: RawMessage, topic: str, failure: Failure, batch: _Batch
    ) -> None:
        """Park an item one of whose outputs cannot be delivered; the rest of its
        decision stands (a command stays outstanding, so it is resent and, if it
        still cannot be delivered, escalated to a person)."""
        reason = f"output to {topic} not delivered: {failure.reason}"
        await self._park_with(raw, failure, reason, batch)

    async def _park_with(
        self, raw: RawMessage, failure: Failure, reason: str, batch: _Batch
    ) -> None:
        self.metrics.observe_parked(raw.topic, failure.failure_class.value)
        dead = parked(
            raw.key,
            raw.value,
            raw.topic,
            raw.partition,
            raw.offset,
            self.clock.now(),
            failure_class=failure.failure_class,
            reason=reason,
            max_message_bytes=self.codec.max_message_bytes,
            reason_class=(
                ReasonClass.OVERSIZE
                if failure.failure_class is FailureClass.RECORD_TOO_LARGE
                else ReasonClass.INVALID_MODEL
            ),
        )
        await self._send_dead_letter(raw, dead, batch)

    async def _emit(
        self,
        raw: RawMessage,
        topic: str,
        key: bytes | None,
        model: Frozen,
        partition: int | None,
        batch: _Batch,
    ) -> bool:
        """Hand one output of ``raw``'s decision to the producer; False if it was parked."""
        try:
            value = self.codec.encode(model)
        except Exception as exc:
            await self._park_output(raw, topic, classify(exc, Step.SEND), batch)
            return False

        async def send() -> Awaitable[Any]:
            return await self.send(topic, key, value, partition)

        try:
            delivery = await self._retrying(Step.SEND, send)
        except StepFailed as failed:
            if failed.failure.transient:
                raise MustStop(failed.cause) from failed
            await self._park_output(raw, topic, failed.failure, batch)
            return False
        batch.pending.append(_Output(raw, topic, delivery))
        return True

    @never_raises
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

    @never_raises
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
        self, decision: Decision, raw: RawMessage, now: datetime, batch: _Batch
    ) -> None:
        """Hand every output to the producer, in order; their deliveries go to ``batch``."""
        if decision.audit:
            # Linked before anything else is sent. The audit chain is per
            # partition: audit events go to the same partition number as the
            # input they record, which they name. The batch's events of one
            # partition are committed in one transaction (agents/audit_writer.py).
            try:
                commit = await self.audit.append(
                    raw.partition, decision.audit, source=raw.source, decided_at=now
                )
            except AuditWriteError as exc:
                # Fenced (another worker owns the partition), unavailable after
                # retries, or refused: no event of this batch may be acked.
                raise MustStop(exc) from exc
            batch.pending.append(_Output(raw, self.names.audit, commit))
        for command in decision.commands:
            topic = self.names.command(command.target_system)
            if not await self._emit(raw, topic, command.subject_id.encode(), command, None, batch):
                continue
            if command.attempt > 1:
                self.metrics.observe_resend(command.target_system, command.action.value)
            else:
                self.metrics.observe_command(
                    command.target_system, command.action.value, command.rule_id
                )
        for response in decision.responses:
            await self._emit(
                raw, self.names.responses, response.subject_id.encode(), response, None, batch
            )
        for entry in decision.audit:
            self.metrics.observe_decision(entry.rule_id, entry.decision)
            if entry.decision == ESCALATED:
                self.metrics.observe_escalation(
                    entry.details.get("system", "unknown"),
                    entry.details.get("action", "unknown"),
                )
            self.metrics.observe_audit(entry.decision)

    async def _confirm(self, batch: _Batch) -> None:
        """Wait until the broker has every output handed to the producer so far.

        Before state is written and before the offset can be committed. An
        output the broker refused for good is parked (its dead letter is then
        waited for too). A transient failure is not resent here: the producer
        has already retried it until its delivery timeout, and a resend could
        land behind records sent after it; the batch is replayed instead.
        """
        while batch.pending:
            outputs, batch.pending = batch.pending, []
            results = await asyncio.gather(*(o.delivery for o in outputs), return_exceptions=True)
            for output, result in zip(outputs, results, strict=True):
                if not isinstance(result, BaseException):
                    continue
                if not isinstance(result, Exception):
                    raise result  # cancelled: the worker is stopping
                failure = classify(result, Step.SEND)
                # A dead letter or an audit commit cannot be parked in turn: the
                # audit transaction holds every decision of the batch on that
                # partition, and the writer has already retried it.
                if failure.transient or output.topic in (self.names.dead_letter, self.names.audit):
                    raise MustStop(result)
                await self._park_output(output.item, output.topic, failure, batch)


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
