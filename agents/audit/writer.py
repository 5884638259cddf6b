"""Writes the audit chain: one transactional producer per owned partition.

The handler gives this module the audit entries of each decision with the
input they were decided on; it links them into the partition's hash chain and
commits each batch's events of one partition in one Kafka transaction.

Why transactions, and one ``transactional.id`` per partition
(``<app id>.audit.<partition>``, the same on every worker):

- **No broker-retry duplicates.** A transactional producer is idempotent: the
  broker drops a retried batch it already has (producer id and sequence
  numbers), which the worker's Faust producer (aiokafka, no idempotence in
  at-least-once mode) did not: a failover made it write audit records twice and
  broke the chain. A transaction is also all or nothing: a batch cut short by a
  crash is aborted, never half visible to ``read_committed`` readers.
- **Fencing.** Before a worker first appends to a partition it calls
  ``init_transactions()`` with that partition's id. The broker then bumps the
  producer epoch, aborts whatever an earlier holder of the id had open, and
  refuses every later write of the older producer (``PRODUCER_FENCED``). A
  worker evicted from the group that still appends from its cached chain head
  gets an error (``AuditFenced``) instead of forking the chain. The chain head
  is read only after fencing, with ``read_committed``, so the new owner
  continues from the last record any writer could commit.
- **Why not aiokafka idempotence plus a generation check.** Idempotence stops
  retry duplicates but not a zombie writer; a group generation in each record
  would let the verifier spot a fork after the fact, but the fork would still
  be written, and nothing on the broker enforces the check. Faust's
  ``exactly_once`` guarantee would make every output and offset commit
  transactional and change the whole worker; only the audit chain needs a
  single writer per partition.

- **Outputs fenced too.** A decision's commands, responses and erasure-ledger
  entries go out in the same transaction as its audit events
  (``append(..., outputs=...)``), so a worker that lost the partition can no
  longer send for it either: a DELETE from stale state (past a hold the new
  owner has just placed) is refused with the audit. Downstream consumers read
  ``read_committed``. The new owner fences every partition it is assigned at
  once (``claim``), not at its first append, so the window in which a zombie's
  transaction can still commit ends with the assignment. An output the broker
  refuses for good inside the transaction (too large for its topic, not
  authorised) is taken out and the rest committed again with the same audit
  events; the refused ones are returned to the caller, which parks their items
  (``OutputsRefused``), so one bad output never stops the partition.

The cost: one librdkafka producer per owned partition, one transaction commit
per partition per batch (the batch waits for it, as it waited for the broker's
acknowledgement before), and ``init_transactions`` plus a tail read when a
partition is first written after an assignment.

Failure classes: transient errors (a broker failover, a coordinator moving, a
timeout) are retried with bounded exponential backoff and counted in
``lifecycle_audit_write_errors_total{outcome="retried"}``; after the bound the
write fails with ``AuditUnavailable``. ``AuditFenced`` means another worker
owns the partition now: this worker must not append there again until a
rebalance gives the partition back (``release``). ``AuditRefused`` is a
permanent refusal (not authorised, too large). A failed commit is never
half-written: the transaction is aborted and the chain head is read again
before the next append.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from agents.audit.chain import ChainHead, link
from agents.audit.heads import read_chain_head
from agents.clock import Clock
from agents.rules.context import AuditEntry
from agents.runtime.kafka_errors import (
    FENCED_CODES,
    PURGED_CODES,
    is_fenced,
    is_transient,
    is_transient_error,
)
from agents.runtime.metrics import LifecycleMetrics
from schemas.audit import AuditEvent, AuditSource
from streams.codec import Codec, RegistryUnavailable
from streams.topics import MURMUR2_PARTITIONER

log = logging.getLogger(__name__)

T = TypeVar("T")

# One blocking call (init, commit, abort) waits at most this long; librdkafka
# resumes a timed-out call when it is made again.
CALL_TIMEOUT_S = 10.0
# Must exceed a batch's commit time, and bounds how long a crashed writer's
# open transaction holds back read_committed readers when nobody takes over.
TRANSACTION_TIMEOUT_MS = 60_000


class AuditWriteError(Exception):
    """An audit write did not happen; the events it carried are not in the chain."""


class AuditFenced(AuditWriteError):
    """Another worker owns the partition now; this one must not append to it."""


class AuditUnavailable(AuditWriteError):
    """Transient errors outlasted the bounded retries."""


class AuditRefused(AuditWriteError):
    """The broker refused the write for a reason retrying will not fix."""


class PartitionLog(Protocol):
    """Blocking operations on one audit partition, called one at a time from a thread."""

    def fence(self) -> None:
        """Take the partition over: earlier writers' later writes are refused."""

    def read_head(self) -> ChainHead:
        """The chain's head as committed on the topic."""

    def commit(self, events: Sequence[AuditEvent], outputs: Sequence[FencedOutput] = ()) -> None:
        """Append ``events`` and send ``outputs`` atomically; may be called again with the
        same arguments after a transient error, and then completes or redoes the same
        transaction. Raises ``OutputsRefused`` (the transaction aborted) when some
        outputs were refused for good."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded backoff for transient errors: at most 10 attempts and 2 minutes."""

    wait: wait_base = field(default_factory=lambda: wait_exponential(multiplier=0.25, max=8))
    stop: stop_base = field(default_factory=lambda: stop_after_attempt(10) | stop_after_delay(120))


def _transient(exc: BaseException) -> bool:
    return is_transient(exc) or isinstance(exc, RegistryUnavailable)


@dataclass(frozen=True, eq=False)
class FencedOutput:
    """A record sent in its input partition's audit transaction (commands,
    responses, ledger entries). ``tag`` is the caller's, handed back if refused."""

    topic: str
    key: bytes | None
    value: bytes
    tag: Any = None


# An output the broker refused for good inside a transaction, and why.
Refused = tuple[FencedOutput, Exception]


class OutputsRefused(Exception):
    """Some outputs of a transaction were refused for good (by position)."""

    def __init__(self, failed: dict[int, Exception]) -> None:
        super().__init__(f"{len(failed)} output(s) refused")
        self.failed = failed


@dataclass(eq=False)
class _Batch:
    """Events linked onto a partition's chain, and outputs, not yet committed."""

    events: list[AuditEvent] = field(default_factory=list)
    outputs: list[FencedOutput] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    task: asyncio.Future[list[Refused]] | None = None


@dataclass(eq=False)
class _Partition:
    number: int
    log: PartitionLog
    head: ChainHead
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batch: _Batch | None = None
    failed: AuditWriteError | None = None


class _Commit:
    """Awaiting it commits the partition's open batch: once, for every append in it."""

    def __init__(
        self,
        writer: AuditWriter,
        part: _Partition,
        batch: _Batch,
        outputs: Sequence[FencedOutput] = (),
    ) -> None:
        self.writer, self.part, self.batch = writer, part, batch
        # This append's outputs: only their refusals are this caller's to handle.
        self.outputs = {id(o) for o in outputs}

    def __await__(self) -> Generator[Any, None, list[Refused]]:
        return self._own().__await__()

    async def _own(self) -> list[Refused]:
        refused = await self.writer._commit(self.part, self.batch)
        return [r for r in refused if id(r[0]) in self.outputs]


class AuditWriter:
    """Appends audit events per partition; one instance per worker."""

    def __init__(
        self,
        *,
        key: bytes,
        metrics: LifecycleMetrics,
        open_log: Callable[[int], PartitionLog],
        retry: RetryPolicy | None = None,
    ) -> None:
        self.key = key
        self.metrics = metrics
        self.open_log = open_log
        self.retry = retry or RetryPolicy()
        self._parts: dict[int, _Partition] = {}
        self._opening: dict[int, asyncio.Future[_Partition]] = {}
        self._fenced: set[int] = set()

    async def append(
        self,
        partition: int,
        entries: Sequence[AuditEntry],
        *,
        source: AuditSource,
        decided_at: datetime,
        outputs: Sequence[FencedOutput] = (),
    ) -> Awaitable[list[Refused]]:
        """Link ``entries`` onto ``partition``'s chain, with ``outputs`` to send in the
        same transaction; await the result to commit them. It returns the outputs the
        broker refused for good (the rest, and every entry, are committed).

        Appends to one partition before the first await form one transaction,
        so a batch of decisions costs one commit per partition.
        """
        part = await self._owned(partition)
        batch = part.batch
        if batch is None:
            batch = part.batch = _Batch()
        for index, entry in enumerate(entries):
            event = link(
                part.head,
                entry,
                partition=partition,
                key=self.key,
                decided_at=decided_at,
                source=source,
                entry_index=index,
            )
            part.head = ChainHead.of(event)
            batch.events.append(event)
        batch.outputs.extend(outputs)
        return _Commit(self, part, batch, outputs)

    async def claim(self, partitions: Iterable[int]) -> None:
        """Fence ``partitions`` now (just assigned), not at their first append: from
        here on a zombie owner's transaction for them is refused."""
        for number in sorted(partitions):
            try:
                await self._owned(number)
            except AuditWriteError as exc:  # the first append tries again
                log.warning("audit partition %d: not claimed at assignment (%s)", number, exc)

    async def release(self, partitions: Iterable[int] | None = None) -> None:
        """Forget ``partitions`` (default: all) after a rebalance took them away.

        Their producers are closed once an in-flight commit is done; the next
        append fences again and re-reads the head, and a fenced partition may
        be written again once a rebalance has given it back.
        """
        numbers = set(self._parts) | self._fenced if partitions is None else set(partitions)
        self._fenced -= numbers
        for number in sorted(numbers):
            part = self._parts.pop(number, None)
            if part is None:
                continue
            async with part.lock:
                part.failed = part.failed or AuditFenced(f"audit partition {number} was revoked")
                await self._close_log(part.log)

    async def close(self) -> None:
        await self.release()

    # -- owning a partition ------------------------------------------------

    async def _owned(self, number: int) -> _Partition:
        part = self._parts.get(number)
        if part is not None:
            return part
        if number in self._fenced:
            raise AuditFenced(
                f"audit partition {number} is owned by another worker; waiting for a rebalance"
            )
        opening = self._opening.get(number)
        if opening is None:
            opening = asyncio.ensure_future(self._open(number))
            self._opening[number] = opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening.get(number) is opening:
                del self._opening[number]

    async def _open(self, number: int) -> _Partition:
        partition_log = self.open_log(number)
        try:
            # Fence first, then read: no earlier writer can commit after the read.
            await self._call("fence", number, partition_log.fence)
            head = await self._call("read_head", number, partition_log.read_head)
        except BaseException:
            await self._close_log(partition_log)
            raise
        part = _Partition(number, partition_log, head)
        self._parts[number] = part
        log.info("audit partition %d: writing from sequence %d", number, head.sequence + 1)
        return part

    # -- committing --------------------------------------------------------

    async def _commit(self, part: _Partition, batch: _Batch) -> list[Refused]:
        if batch.task is None:
            if part.batch is batch:
                part.batch = None  # later appends start the next transaction
            batch.task = asyncio.ensure_future(self._write(part, batch))
        # A cancelled caller must not cut a commit short in its thread.
        return await asyncio.shield(batch.task)

    async def _write(self, part: _Partition, batch: _Batch) -> list[Refused]:
        async with part.lock:
            if part.failed is not None:
                # Linked onto events that never made it: the chain must be re-read.
                raise type(part.failed)(
                    f"audit partition {part.number}: an earlier write failed ({part.failed})"
                )
            try:
                while True:
                    try:
                        await self._call("commit", part.number, _committer(part.log, batch))
                        return batch.refused
                    except OutputsRefused as refused:
                        # Aborted: the same events go again without the refused outputs.
                        self._drop_refused(part.number, batch, refused)
            except AuditWriteError as exc:
                part.failed = exc
                if self._parts.get(part.number) is part:
                    del self._parts[part.number]
                await self._close_log(part.log)
                raise

    def _drop_refused(self, number: int, batch: _Batch, refused: OutputsRefused) -> None:
        kept: list[FencedOutput] = []
        for index, output in enumerate(batch.outputs):
            error = refused.failed.get(index)
            if error is None:
                kept.append(output)
            else:
                batch.refused.append((output, error))
                log.error(
                    "audit partition %d: an output to %s refused (%s); sending the rest",
                    number,
                    output.topic,
                    _describe(error),
                )
        if len(kept) == len(batch.outputs):  # nothing identified: do not loop
            raise AuditRefused(f"audit partition {number}: outputs refused, none identified")
        batch.outputs = kept

    # -- retries -----------------------------------------------------------

    async def _call(self, operation: str, partition: int, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_transient),
                wait=self.retry.wait,
                stop=self.retry.stop,
                before_sleep=lambda state: self._retrying(operation, partition, state),
                reraise=True,
            ):
                with attempt:
                    return await loop.run_in_executor(None, call)
        except OutputsRefused:
            raise
        except Exception as exc:
            raise self._failure(operation, partition, exc) from exc
        raise AssertionError("unreachable: AsyncRetrying returns or raises")

    def _retrying(self, operation: str, partition: int, state: RetryCallState) -> None:
        self.metrics.observe_audit_error(operation, "retried")
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "audit partition %d: %s failed (%s), retrying (attempt %d)",
            partition,
            operation,
            _describe(exc),
            state.attempt_number,
        )

    def _failure(self, operation: str, partition: int, exc: Exception) -> AuditWriteError:
        if is_fenced(exc):
            self._fenced.add(partition)
            self.metrics.observe_audit_error(operation, "fenced")
            log.error(
                "audit partition %d: fenced by a newer owner; this worker no longer appends "
                "to it until a rebalance gives it back",
                partition,
            )
            return AuditFenced(f"audit partition {partition}: {_describe(exc)}")
        if _transient(exc):
            self.metrics.observe_audit_error(operation, "unavailable")
            log.error(
                "audit partition %d: %s still failing after retries (%s)",
                partition,
                operation,
                _describe(exc),
            )
            return AuditUnavailable(f"audit partition {partition}: {operation}: {_describe(exc)}")
        self.metrics.observe_audit_error(operation, "refused")
        log.error("audit partition %d: %s refused (%s)", partition, operation, _describe(exc))
        return AuditRefused(f"audit partition {partition}: {operation}: {_describe(exc)}")

    async def _close_log(self, partition_log: PartitionLog) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, partition_log.close)
        except Exception as exc:  # closing is best effort; the broker times the rest out
            log.warning("closing an audit producer failed (%s)", _describe(exc))


def refused_for_good(error: KafkaError) -> bool:
    """Whether a delivery report says the broker will never take that output. Not a
    transient error, not the writer being fenced (the whole commit fails then), and
    not a purge: when one output of a transaction fails, librdkafka takes the others
    back unsent, and those must go again with the next attempt."""
    return not (
        is_transient_error(error) or error.code() in FENCED_CODES or error.code() in PURGED_CODES
    )


def _committer(partition_log: PartitionLog, batch: _Batch) -> Callable[[], None]:
    events, outputs = batch.events, list(batch.outputs)
    return lambda: partition_log.commit(events, outputs)


def _describe(exc: BaseException | None) -> str:
    # Kafka errors name codes and brokers, never message contents.
    return "?" if exc is None else f"{type(exc).__name__}: {exc}"


# -- Kafka ---------------------------------------------------------------------


def transactional_id(app_id: str, partition: int) -> str:
    """The same on every worker, so whoever owns the partition fences the others.

    The ACLs grant the prefix ``<app id>.audit.`` (deploy/kafka-acls.sh).
    """
    return f"{app_id}.audit.{partition}"


class _Txn(enum.Enum):
    IDLE = "idle"
    COMMITTING = "committing"  # produced; commit_transaction to be (re)tried
    ABORTING = "aborting"  # failed; abort before starting again


@dataclass(frozen=True)
class KafkaAuditTopic:
    """Opens transactional partition logs on the audit topic."""

    topic: str
    app_id: str
    client_config: dict[str, str]
    codec: Codec
    clock: Clock
    on_unreadable: Callable[[int, int], None] = lambda partition, offset: None

    def transactional_id(self, partition: int) -> str:
        return transactional_id(self.app_id, partition)

    def producer_config(self, partition: int) -> dict[str, str | int | bool]:
        return {
            **self.client_config,
            "transactional.id": self.transactional_id(partition),
            # Implied by transactional.id; stated because it is the point.
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": 5,
            # Keyed outputs land where the rest of the pipeline puts that key.
            "partitioner": MURMUR2_PARTITIONER,
        }

    def open(self, partition: int) -> KafkaPartitionLog:
        return KafkaPartitionLog(self, partition)


class KafkaPartitionLog:
    """One audit partition, written by its own transactional producer."""

    def __init__(self, topic: KafkaAuditTopic, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.producer = Producer(topic.producer_config(partition))
        self.state = _Txn.IDLE
        # Outputs of the open transaction refused for good, by position.
        self._refused: dict[int, Exception] = {}

    def fence(self) -> None:
        self.producer.init_transactions(CALL_TIMEOUT_S)

    def read_head(self) -> ChainHead:
        t = self.topic
        return read_chain_head(
            t.client_config,
            t.topic,
            self.partition,
            t.codec,
            t.clock,
            on_unreadable=lambda offset: t.on_unreadable(self.partition, offset),
        )

    def commit(self, events: Sequence[AuditEvent], outputs: Sequence[FencedOutput] = ()) -> None:
        if self.state is _Txn.ABORTING:
            self.producer.abort_transaction(CALL_TIMEOUT_S)
            self.state = _Txn.IDLE
        if self.state is _Txn.IDLE:
            self._refused = {}
            self.producer.begin_transaction()
            try:
                for event in events:
                    self._produce(self.topic.topic, None, self.topic.codec.encode(event))
                for index, output in enumerate(outputs):
                    self._produce(output.topic, output.key, output.value, index)
            except BaseException:
                self.state = _Txn.ABORTING
                raise
            self.state = _Txn.COMMITTING
        try:
            self.producer.commit_transaction(CALL_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].txn_requires_abort():
                self.state = _Txn.ABORTING
            if self._refused:
                raise OutputsRefused(dict(self._refused)) from exc
            raise
        self.state = _Txn.IDLE

    def _produce(self, topic: str, key: bytes | None, value: bytes, output: int = -1) -> None:
        while True:
            try:
                if output < 0:  # the audit goes to the chain's own partition
                    self.producer.produce(topic, value=value, partition=self.partition)
                else:  # outputs by key, reporting their own delivery
                    on_delivery = self._on_output_delivery(output)
                    self.producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused locally (too large, unknown topic)
                if output < 0 or is_transient(exc):
                    raise
                self._refused[output] = exc
                return

    def _on_output_delivery(self, output: int) -> Callable[[Any, Any], None]:
        # This transaction's map: a report that comes after an abort (purged
        # messages) must not count against the next transaction's outputs.
        refused = self._refused

        def delivered(error: Any, _message: Any) -> None:
            if error is not None and refused_for_good(error):
                refused[output] = KafkaException(error)

        return delivered

    def close(self) -> None:
        # Aborts a transaction still open (one that failed), then shuts down.
        self.producer.close()
