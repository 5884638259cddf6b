"""Failure classes: what to do when a step of handling an event raises.

* **Transient** (the broker, a leader or the network is briefly unavailable):
  retry with bounded exponential backoff (``retrying``), counting each retry;
  when the bound is exhausted the caller stops the worker without committing,
  so the event is replayed, never skipped.
* **Permanent** (waiting will not heal it: a topic that does not exist, a record
  too large, not authorised, a record that cannot be read or written, a stored
  state the current model rejects): the item is parked on the dead-letter
  topic with a ``FailureClass`` and the partition goes on.

Exceptions arrive from aiokafka (the Faust producer, sometimes wrapped in
Faust's ``ProducerSendError``), from confluent-kafka (``KafkaException`` with a
``KafkaError``), from our codec, and from anything else. Only types known to
be transient are retried; an unknown exception is permanent, because retrying
or restarting cannot change a deterministic failure and would loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import aiokafka.errors as ak
from confluent_kafka import KafkaError, KafkaException
from faust.exceptions import ProducerSendError
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

from schemas.deadletter import FailureClass
from streams.codec import DecodeError, EncodeError, RegistryUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class Step(StrEnum):
    """Where an item failed; the ``step`` label of the retry metric."""

    DECODE = "decode"
    LOAD = "load"
    DECIDE = "decide"
    SEND = "send"
    CHAIN_HEAD = "chain_head"
    STORE = "store"


@dataclass(frozen=True)
class Failure:
    transient: bool
    failure_class: FailureClass
    # The exception's type, never its message (which may quote a payload).
    error: str

    @property
    def reason(self) -> str:
        return f"{self.failure_class.value} ({self.error})"


# aiokafka: the producer retries these itself; if one still reaches us the
# cluster is (still) unavailable, which time heals.
_AIOKAFKA_TRANSIENT: tuple[type[Exception], ...] = (
    ak.KafkaTimeoutError,
    ak.RequestTimedOutError,
    ak.NotLeaderForPartitionError,
    ak.LeaderNotAvailableError,
    ak.NotEnoughReplicasError,
    ak.NotEnoughReplicasAfterAppendError,
    ak.KafkaConnectionError,
    ak.NodeNotReadyError,
    ak.NoBrokersAvailable,
)
_AIOKAFKA_PERMANENT: tuple[tuple[type[Exception], FailureClass], ...] = (
    # aiokafka marks this retriable (metadata may lag), but it raises it only
    # after waiting out its metadata timeout: the topic is not there.
    (ak.UnknownTopicOrPartitionError, FailureClass.UNKNOWN_TOPIC),
    (ak.InvalidTopicError, FailureClass.UNKNOWN_TOPIC),
    (ak.MessageSizeTooLargeError, FailureClass.RECORD_TOO_LARGE),
    (ak.RecordTooLargeError, FailureClass.RECORD_TOO_LARGE),
    (ak.RecordListTooLargeError, FailureClass.RECORD_TOO_LARGE),
    (ak.TopicAuthorizationFailedError, FailureClass.NOT_AUTHORISED),
    (ak.ClusterAuthorizationFailedError, FailureClass.NOT_AUTHORISED),
    (ak.GroupAuthorizationFailedError, FailureClass.NOT_AUTHORISED),
    (ak.TransactionalIdAuthorizationFailed, FailureClass.NOT_AUTHORISED),
    (ak.CorruptRecordException, FailureClass.UNREADABLE_RECORD),
)

# librdkafka error codes (confluent-kafka).
_CONFLUENT_TRANSIENT = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
_CONFLUENT_PERMANENT = {
    KafkaError.UNKNOWN_TOPIC_OR_PART: FailureClass.UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_TOPIC: FailureClass.UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION: FailureClass.UNKNOWN_TOPIC,
    KafkaError.TOPIC_EXCEPTION: FailureClass.UNKNOWN_TOPIC,
    KafkaError.MSG_SIZE_TOO_LARGE: FailureClass.RECORD_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE: FailureClass.RECORD_TOO_LARGE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED: FailureClass.NOT_AUTHORISED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: FailureClass.NOT_AUTHORISED,
    KafkaError.GROUP_AUTHORIZATION_FAILED: FailureClass.NOT_AUTHORISED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: FailureClass.NOT_AUTHORISED,
    KafkaError.SASL_AUTHENTICATION_FAILED: FailureClass.NOT_AUTHORISED,
    KafkaError._AUTHENTICATION: FailureClass.NOT_AUTHORISED,
    KafkaError.INVALID_MSG: FailureClass.UNREADABLE_RECORD,
    KafkaError._BAD_MSG: FailureClass.UNREADABLE_RECORD,
}

# An exception we do not know, by the step it came from.
_UNKNOWN_BY_STEP = {
    Step.LOAD: FailureClass.STATE_UNREADABLE,
    Step.STORE: FailureClass.STATE_NOT_STORED,
}


def _cause(exc: BaseException) -> BaseException:
    """The producer's own error inside Faust's wrapper (``raise ... from exc``)."""
    while isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def classify(exc: BaseException, step: Step) -> Failure:
    """Transient or permanent, and the failure class a parked item carries."""
    exc = _cause(exc)
    name = type(exc).__name__
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err: KafkaError = exc.args[0]
        name = f"KafkaException:{err.name()}"
        if err.code() in _CONFLUENT_PERMANENT:
            return Failure(False, _CONFLUENT_PERMANENT[err.code()], name)
        if err.code() in _CONFLUENT_TRANSIENT or err.retriable():
            return Failure(True, FailureClass.OTHER, name)
        return Failure(False, _UNKNOWN_BY_STEP.get(step, FailureClass.OTHER), name)
    for kind, failure_class in _AIOKAFKA_PERMANENT:
        if isinstance(exc, kind):
            return Failure(False, failure_class, name)
    if isinstance(exc, _AIOKAFKA_TRANSIENT) or (
        isinstance(exc, ak.KafkaError) and getattr(exc, "retriable", False)
    ):
        return Failure(True, FailureClass.OTHER, name)
    if isinstance(exc, RegistryUnavailable | OSError):
        # OSError covers ConnectionError, TimeoutError (asyncio's too) and a
        # full disk: conditions a wait or a restart heals.
        return Failure(True, FailureClass.OTHER, name)
    if isinstance(exc, DecodeError):
        return Failure(False, FailureClass.UNREADABLE_RECORD, f"{name}:{exc.reason_class.value}")
    if isinstance(exc, EncodeError):
        return Failure(False, FailureClass.UNENCODABLE_OUTPUT, name)
    return Failure(False, _UNKNOWN_BY_STEP.get(step, FailureClass.PROCESSING_ERROR), name)


class StepFailed(Exception):
    """A step failed for good: permanently, or transiently after every retry."""

    def __init__(self, step: Step, failure: Failure, cause: Exception) -> None:
        super().__init__(f"{step.value}: {failure.reason}")
        self.step = step
        self.failure = failure
        self.cause = cause


@dataclass(frozen=True)
class RetryPolicy:
    """How long a transient failure is retried before the worker stops.

    The bound stays well under the consumer's max poll interval, so a worker
    waiting out an outage is not evicted from its group meanwhile.
    """

    wait: wait_base = field(default_factory=lambda: wait_exponential(multiplier=0.2, max=10))
    attempts: int = 10
    max_seconds: float = 60.0

    @property
    def stop(self) -> stop_base:
        return stop_after_attempt(self.attempts) | stop_after_delay(self.max_seconds)


async def retrying(
    step: Step,
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_retry: Callable[[Step, Failure], None] = lambda step, failure: None,
) -> T:
    """``await call()``, retrying transient failures; raise ``StepFailed`` otherwise."""
    # The first attempt runs without tenacity: it succeeds almost always, and
    # building a retry loop per call was a visible share of the worker's time.
    try:
        return await call()
    except Exception as exc:
        if not classify(exc, step).transient:
            raise StepFailed(step, classify(exc, step), exc) from exc
        first: list[Exception] = [exc]

    async def again() -> T:
        # The retry loop's first attempt is the one that already failed.
        if first:
            raise first.pop()
        return await call()

    def transient(exc: BaseException) -> bool:
        return classify(exc, step).transient

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is None:  # pragma: no cover - tenacity sleeps only after a failure
            return
        failure = classify(exc, step)
        log.warning(
            "transient failure in step %s (%s); retry %d",
            step.value,
            failure.error,
            state.attempt_number,
        )
        on_retry(step, failure)

    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(transient),
            wait=policy.wait,
            stop=policy.stop,
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return await again()
    except Exception as exc:
        raise StepFailed(step, classify(exc, step), exc) from exc
    raise AssertionError("unreachable: AsyncRetrying returns or raises")  # pragma: no cover
