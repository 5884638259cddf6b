"""The agent's body: decode, decide, emit, store. Thin by design.

All policy lives in the pure ``decide``; this module only moves bytes. The
order matters for at-least-once delivery: every outgoing message is confirmed
by the broker before the state is written (``StateStore.persist``: changelog
confirmed, then the local store), and the source offsets are committed only
after that. A crash anywhere replays the event, and replays are harmless
because command ids are stable and decisions deduplicate event ids.

A decision reads the subject's entries through a layer holding what earlier
decisions of the same batch wrote. A subject still in the previous one-value
format is converted when first met (``agents.store.legacy``).

Failures are isolated per event (``agents.runtime.failures``): a transient one is
retried, and if it does not heal the worker stops without committing (the
batch is replayed); a permanent one parks that event, or the one output that
cannot be delivered, on the dead-letter topic, and the batch goes on. A stored
value that cannot be read is quarantined: the value (once) and the event are
parked as ``state_unreadable`` and the subject's later events likewise, until
it is repaired. Faust acknowledges a batch only when ``handle_batch`` returns,
and it returns only once every output, dead letter and state of the batch is
durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeVar

from agents.audit.writer import AuditWriteError, FencedOutput, Refused
from agents.clock import Clock
from agents.rules import cutoff
from agents.rules.context import AuditEntry, Decision
from agents.rules.decide import decide
from agents.rules.ledger import ledger_key
from agents.rules.policy import Policy
from agents.runtime.failures import Failure, RetryPolicy, Step, StepFailed, classify, retrying
from agents.runtime.metrics import LifecycleMetrics, never_raises
from agents.store import keys, legacy
from agents.store.base import MAX_MESSAGE_BYTES, StateStore, StoreError
from agents.store.codec import UnreadableState
from agents.store.layer import Layer, Write
from schemas.audit import AuditSource
from schemas.base import Frozen
from schemas.commands import CommandAck
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import INPUT_EVENTS, Event, SourceWatermark
from schemas.internal import DueTick, ErasureReplay
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
class _Subject:
    """One subject's writes in a batch (last value per key, in first-write order)
    and every item of the batch whose decision they carry."""

    partition: int
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    items: list[RawMessage] = field(default_factory=list)

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


# Entries of the partition rather than of a subject (agents.rules.cutoff): written
# after the batch's subjects, so a watermark is stored once per batch, at its
# latest value, whichever subjects' decisions moved it.
PARTITION_NAMESPACES = (keys.WATERMARK,)


@dataclass
class _Batch:
    """What a batch has decided so far: deliveries, read layers, writes per subject."""

    store: StateStore
    pending: list[_Output] = field(default_factory=list)
    layers: dict[int, Layer] = field(default_factory=dict)
    subjects: dict[str, _Subject] = field(default_factory=dict)
    partitions: dict[int, _Subject] = field(default_factory=dict)

    def layer(self, partition: int) -> Layer:
        if partition not in self.layers:
            self.layers[partition] = Layer(self.store.entries(partition))
        return self.layers[partition]

    def write(self, subject_id: str | None, raw: RawMessage, writes: list[Write]) -> None:
        self.layer(raw.partition).apply(writes)
        own = [w for w in writes if w[0][:1] in PARTITION_NAMESPACES]
        if own:
            shared = self.partitions.setdefault(raw.partition, _Subject(raw.partition))
            shared.writes.update(own)
            if subject_id is None:
                shared.items.append(raw)
        if subject_id is None:
            return
        group = self.subjects.setdefault(subject_id, _Subject(raw.partition))
        group.writes.update(w for w in writes if w[0][:1] not in PARTITION_NAMESPACES)
        group.items.append(raw)

    def groups(self) -> list[_Subject]:
        """Every subject's writes, then each partition's own."""
        return [*self.subjects.values(), *self.partitions.values()]


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
        outputs: Sequence[FencedOutput] = (),
    ) -> Awaitable[list[Refused]]:
        """Chain ``entries`` and stage ``outputs`` in the same transaction; the returned
        awaitable completes when they are committed, with the outputs refused for good."""


EXIT_DELIVERY_FAILED = 75  # EX_TEMPFAIL: a supervisor should restart the worker


def exit_for_replay(exc: Exception) -> NoReturn:
    """Leave without running shutdown hooks, so no offset is committed."""
    logging.shutdown()
    os._exit(EXIT_DELIVERY_FAILED)


async def _any_topic(_topic: str) -> None:
    """Where no topic check is wired (tests): every topic exists."""


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
        store: StateStore,
        audit: AuditLog,
        send: Sender,
        state_topic: str = "subjects-changelog",
        retry: RetryPolicy | None = None,
        on_delivery_failure: Callable[[Exception], NoReturn] = exit_for_replay,
        check_topic: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.codec = codec
        self.policy = policy
        self.clock = clock
        self.names = names
        self.metrics = metrics
        self.store = store
        self.audit = audit
        self.send = send
        # Where a quarantined value came from (the state changelog), for its dead letter.
        self.state_topic = state_topic
        self.retry = retry or RetryPolicy()
        self.on_delivery_failure = on_delivery_failure
        # Raises for a topic that does not exist (before an output is staged).
        self.check_topic = check_topic or _any_topic
        self._acks_topic = names.acks
        self._ticks_topic = names.ticks
        self._replays_topic = names.erasure_replays
        self._quarantined: set[bytes] = set()

    def _expected(self, topic: str) -> tuple[type[Frozen], ...]:
        if topic == self._acks_topic:
            return (CommandAck,)
        if topic == self._ticks_topic:
            return (DueTick,)
        if topic == self._replays_topic:
            return (ErasureReplay,)
        return (*INPUT_EVENTS, SourceWatermark)

    async def _heartbeat(
        self, raw: RawMessage, heartbeat: SourceWatermark, now: datetime, batch: _Batch
    ) -> None:
        """A source's watermark for this partition. Only on the source's own topic:
        there it follows every event the source published to the partition before it."""
        if raw.topic != self.names.input(heartbeat.source_system):
            # Bad input: elsewhere it would vouch for events it does not follow.
            self.metrics.observe_dead_letter(raw.topic, ReasonClass.INVALID_MODEL.value)
            dead = DeadLetter(
                topic=raw.topic,
                partition=raw.partition,
                offset=raw.offset,
                original_key=raw.key,
                original_value=raw.value,
                reason_class=ReasonClass.INVALID_MODEL,
                reason=f"a SourceWatermark of {heartbeat.source_system} must come on "
                f"{self.names.input(heartbeat.source_system)}, its own input topic",
                failed_at=now,
                original_value_size=len(raw.value or b""),
            )
            await self._send_dead_letter(raw, dead, batch)
            return
        writes = cutoff.on_heartbeat(batch.layer(raw.partition), heartbeat, now, self.policy)
        batch.write(None, raw, writes)

    async def handle(self, raw: RawMessage) -> None:
        await self.handle_batch([raw])

    async def handle_batch(self, items: Sequence[RawMessage]) -> None:
        """Decide a batch in order, wait once for all its outputs, then persist the state.

        One wait for the broker per batch instead of per message is what makes a
        batch cheaper; the order of the guarantees is unchanged: outputs confirmed,
        then the state persisted (each subject's writes in its own partition).

        Whatever fails while one item is handled affects that item only (see the
        module doc). Returns only when everything of the batch is durable;
        otherwise the worker stops without committing.
        """
        batch = _Batch(self.store)
        try:
            for raw in items:
                await self._isolated(raw, batch)
            await self._confirm(batch)
            for item, failure in await self._persist(batch):
                await self._park(item, Step.STORE, failure, batch)
            await self._confirm(batch)  # the dead letters of items parked while storing
        except MustStop as stop:
            self._fail_stop(stop.cause)

    async def _isolated(self, raw: RawMessage, batch: _Batch) -> None:
        """Handle one item; if it fails for good, park it and let the batch go on."""
        try:
            await self._decide_one(raw, batch)
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

    async def _decide_one(self, raw: RawMessage, batch: _Batch) -> None:
        now = self.clock.now()
        decoded = await self._decode(raw, now)
        if isinstance(decoded, DeadLetter):
            await self._send_dead_letter(raw, decoded, batch)
            return
        message = decoded.model
        if isinstance(message, SourceWatermark):
            self.metrics.observe_event(raw.topic, type(message).__name__)
            await self._heartbeat(raw, message, now, batch)
            return
        assert isinstance(message, Event | CommandAck | DueTick | ErasureReplay)
        self.metrics.observe_event(raw.topic, type(message).__name__)
        if isinstance(message, DueTick):
            self.metrics.observe_timer_fired((now - message.due_at).total_seconds())
        subject_id = message.subject_id
        # A subject decided earlier in this batch continues from that decision.
        result = await self._load_and_decide(batch.layer(raw.partition), message, now)
        migrated, stale, outcome = result
        if isinstance(outcome, UnreadableState):
            await self._quarantine(raw, message, outcome, batch)
            return
        if isinstance(outcome, Exception):  # the rules cannot take it: it must not stop the worker
            await self._send_dead_letter(raw, self._rejected(raw, message, outcome, now), batch)
            return
        decision = outcome
        if stale is not None:
            reason = "format-0 value beside keyed state (two worker versions ran at once)"
            await self._park_value(raw, subject_id.encode(), stale, reason, batch)
        too_large = next(
            (
                len(v)
                for k, v in decision.writes
                if v is not None and len(k) + len(v) > MAX_MESSAGE_BYTES
            ),
            None,
        )
        if too_large is not None:
            failure = Failure(False, FailureClass.STATE_NOT_STORED, "StateEntryTooLarge")
            await self._park_with(raw, failure, f"a state entry of {too_large} bytes", batch)
            return
        self._observe(decision)
        await self._enqueue(decision, raw, now, batch)
        batch.write(subject_id, raw, migrated + decision.writes)

    async def _load_and_decide(
        self, base: Layer, message: Event | CommandAck | DueTick | ErasureReplay, now: datetime
    ) -> tuple[list[Write], bytes | None, Decision | Exception]:
        """Read (converting a previous-format subject) and decide, on a layer of its
        own over the batch's. A store read failing transiently is retried (step
        ``load``); one failing for good raises ``StepFailed`` (the item is parked).
        What the rules raise, or a value they cannot read, is returned."""

        async def attempt() -> tuple[list[Write], bytes | None, Decision | Exception]:
            layer = Layer(base)
            try:
                migrated, stale = self._convert(layer, message.subject_id, now)
                return migrated, stale, decide(layer, message, now, self.policy)
            except StoreError as exc:
                raise exc.cause from exc
            except Exception as exc:
                return [], None, exc

        return await self._retrying(Step.LOAD, attempt)

    def _convert(
        self, layer: Layer, subject_id: str, now: datetime
    ) -> tuple[list[Write], bytes | None]:
        """Convert a subject still stored in the previous format (once), into ``layer``;
        also the old value if it sits beside keyed state (two versions ran at once:
        unsupported; the keyed state is carried on and the old value parked)."""
        legacy_key = subject_id.encode()
        old = layer.get(legacy_key)
        if old is None:
            return [], None
        stale = None
        if layer.get(keys.header(subject_id)) is None:
            writes = legacy.convert(old, subject_id=subject_id, policy=self.policy, now=now)
        else:
            stale = old
            writes = [(legacy_key, None)]
        layer.apply(writes)
        return writes, stale

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

    async def _persist(self, batch: _Batch) -> list[tuple[RawMessage, Failure]]:
        """Persist every subject's writes; the items of a subject whose writes the
        broker refused for good, with the failure. The store failing as a whole
        transiently is retried (step ``store``); a delivery failing transiently
        stops the worker (the producer has retried it already; the batch is
        replayed)."""
        groups = batch.groups()
        if not groups:
            return []
        writes = [(g.partition, g.ordered()) for g in groups]

        async def persist() -> list[Exception | None]:
            return await self.store.persist(writes)

        try:
            results = await self._retrying(Step.STORE, persist)
        except StepFailed as failed:
            if failed.failure.transient:
                raise MustStop(failed.cause) from failed
            return [(item, failed.failure) for g in groups for item in g.items]
        refused: list[tuple[RawMessage, Failure]] = []
        for group, error in zip(groups, results, strict=True):
            if error is None:
                continue
            failure = classify(error, Step.STORE)
            if failure.transient:
                raise MustStop(error)
            refused.extend((item, failure) for item in group.items)
        return refused

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
        self, raw: RawMessage, message: Frozen, exc: UnreadableState, batch: _Batch
    ) -> None:
        """A stored value cannot be read: the value (once) and the event are parked
        as ``state_unreadable``; the subject's events wait there (replayable) until
        the value is repaired, and the partition goes on."""
        log.error(
            "unreadable stored state in partition %d: %s; the subject's events are "
            "parked until it is repaired",
            raw.partition,
            exc.reason,
        )
        if exc.key not in self._quarantined:
            self._quarantined.add(exc.key)
            await self._park_value(raw, exc.key, exc.raw, f"unreadable: {exc.reason}", batch)
        failure = Failure(False, FailureClass.STATE_UNREADABLE, "UnreadableState")
        reason = (
            f"the subject's stored state is unreadable ({exc.reason}); re-publish this "
            f"{type(message).__name__} once it is repaired"
        )
        await self._park_with(raw, failure, reason, batch)

    async def _park_value(
        self, raw: RawMessage, key: bytes, value: bytes, reason: str, batch: _Batch
    ) -> None:
        """A stored value to the dead-letter topic, under its store key, with why."""
        self.metrics.observe_parked(self.state_topic, FailureClass.STATE_UNREADABLE.value)
        dead = parked(
            key[:4096],
            value,
            self.state_topic,
            raw.partition,
            -1,
            self.clock.now(),
            failure_class=FailureClass.STATE_UNREADABLE,
            reason=reason,
            max_message_bytes=self.codec.max_message_bytes,
        )
        await self._send_dead_letter(raw, dead, batch)

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
        value = await self._checked(raw, topic, model, batch)
        if value is None:
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

    async def _park_refused(self, refused: list[Refused] | None, batch: _Batch) -> None:
        """Park the items whose outputs the broker refused inside their partition's
        transaction (the rest of it was committed); their decisions stand, so an
        unsent command stays outstanding, is resent and, failing that, escalated."""
        for output, error in refused or ():
            item = output.tag
            assert isinstance(item, RawMessage)
            await self._park_output(item, output.topic, classify(error, Step.SEND), batch)

    @never_raises
    def _observe(self, decision: Decision) -> None:
        notes = decision.notes
        for request_type in notes.requests_opened:
            self.metrics.observe_request_received(request_type)
        for request_type, status in notes.requests_closed:
            self.metrics.observe_request_closed(request_type, status)
        for system, action, outcome, latency in notes.acks:
            self.metrics.observe_ack(system, action, outcome, latency)
        for system, purpose in notes.without_consent:
            self.metrics.observe_without_consent(system, purpose)
        for system, request_type in notes.late_records:
            self.metrics.observe_late_record(system, request_type)

    async def _enqueue(
        self, decision: Decision, raw: RawMessage, now: datetime, batch: _Batch
    ) -> None:
        """Stage the decision's outputs in its partition's audit transaction; the
        commit's delivery goes to ``batch``. Ticks are sent on their own."""
        staged: list[FencedOutput] = []
        for command in decision.commands:
            topic = self.names.command(command.target_system)
            key = command.subject_id.encode()
            if not await self._stage(raw, topic, key, command, staged, batch):
                continue
            if command.attempt > 1:
                self.metrics.observe_resend(command.target_system, command.action.value)
            else:
                self.metrics.observe_command(
                    command.target_system, command.action.value, command.rule_id
                )
        for response in decision.responses:
            key = response.subject_id.encode()
            await self._stage(raw, self.names.responses, key, response, staged, batch)
        for erased in decision.ledger:
            key = ledger_key(erased.system, erased.command_id)
            await self._stage(raw, self.names.erasure_ledger, key, erased, staged, batch)
        if decision.audit or staged:
            # The audit chain is per partition: audit events go to the same
            # partition number as the input they record, which they name, and the
            # decision's outputs go in the same transaction, fenced with it: a
            # worker that lost the partition can send neither. The batch's
            # decisions of one partition share one transaction (agents/audit/writer.py).
            try:
                commit = await self.audit.append(
                    raw.partition,
                    decision.audit,
                    source=raw.source,
                    decided_at=now,
                    outputs=staged,
                )
            except AuditWriteError as exc:
                # Fenced (another worker owns the partition), unavailable after
                # retries, or refused: no event of this batch may be acked.
                raise MustStop(exc) from exc
            batch.pending.append(_Output(raw, self.names.audit, commit))
        for entry in decision.audit:
            self.metrics.observe_decision(entry.rule_id, entry.decision)
            if entry.decision == ESCALATED:
                self.metrics.observe_escalation(
                    entry.details.get("system", "unknown"),
                    entry.details.get("action", "unknown"),
                )
            self.metrics.observe_audit(entry.decision)
        if decision.more:
            # Work is left (a page of a long job): the subject is ticked again at once.
            tick = DueTick(subject_id=decision.subject_id, due_at=now, sent_at=now)
            await self._emit(raw, self._ticks_topic, tick.subject_id.encode(), tick, None, batch)

    async def _stage(
        self,
        raw: RawMessage,
        topic: str,
        key: bytes,
        model: Frozen,
        staged: list[FencedOutput],
        batch: _Batch,
    ) -> bool:
        """Add one output to ``staged`` (False, and ``raw`` parked, if it cannot go):
        what would fail for good at the broker is found here, one item at a time,
        not by aborting the partition's whole transaction."""
        value = await self._checked(raw, topic, model, batch)
        if value is None:
            return False

        async def check() -> None:
            await self.check_topic(topic)

        try:
            await self._retrying(Step.SEND, check)
        except StepFailed as failed:
            if failed.failure.transient:
                raise MustStop(failed.cause) from failed
            await self._park_output(raw, topic, failed.failure, batch)
            return False
        staged.append(FencedOutput(topic, key, value, tag=raw))
        return True

    async def _checked(
        self, raw: RawMessage, topic: str, model: Frozen, batch: _Batch
    ) -> bytes | None:
        """``model`` encoded, or None (and ``raw`` parked) if it cannot be, or is over
        the bound every output keeps."""
        try:
            value = self.codec.encode(model)
        except Exception as exc:
            await self._park_output(raw, topic, classify(exc, Step.SEND), batch)
            return None
        if len(value) > MAX_MESSAGE_BYTES:
            # Outputs are bounded by construction (docs/state.md); one that is not is
            # a bug, parked rather than sent to fail at the broker.
            failure = Failure(False, FailureClass.RECORD_TOO_LARGE, "OutputOverBound")
            await self._park_output(raw, topic, failure, batch)
            return None
        return value

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
                    if output.topic == self.names.audit:
                        await self._park_refused(result, batch)
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
