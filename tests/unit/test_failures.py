"""Failure classes of the real client exception types, and the bounded retry."""

from __future__ import annotations

import asyncio

import aiokafka.errors as ak
import pytest
from confluent_kafka import KafkaError, KafkaException
from faust.exceptions import ProducerSendError
from pydantic import ValidationError
from tenacity import wait_none

from agents.rules.state import SubjectHeader
from agents.runtime.failures import Failure, RetryPolicy, Step, StepFailed, classify, retrying
from schemas.deadletter import FailureClass, ReasonClass
from streams.codec import DecodeError, EncodeError, RegistryUnavailable

FAST = RetryPolicy(wait=wait_none(), attempts=4, max_seconds=60)


def faust_wrapped(exc: Exception) -> ProducerSendError:
    # What Faust's aiokafka driver raises when the producer's send() raises.
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        return wrapped


def confluent(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


TRANSIENT = [
    ak.KafkaTimeoutError(),
    ak.NotLeaderForPartitionError(),
    ak.RequestTimedOutError(),
    ak.KafkaConnectionError(),
    ak.LeaderNotAvailableError(),
    ak.NotEnoughReplicasError(),
    faust_wrapped(ak.KafkaTimeoutError()),
    confluent(KafkaError._TIMED_OUT),
    confluent(KafkaError._TRANSPORT),
    confluent(KafkaError._ALL_BROKERS_DOWN),
    confluent(KafkaError.REQUEST_TIMED_OUT),
    confluent(KafkaError.NOT_LEADER_FOR_PARTITION),
    ConnectionResetError(),
    TimeoutError(),
    RegistryUnavailable("down"),
]

PERMANENT = [
    (ak.UnknownTopicOrPartitionError(), FailureClass.UNKNOWN_TOPIC),
    (faust_wrapped(ak.UnknownTopicOrPartitionError()), FailureClass.UNKNOWN_TOPIC),
    (confluent(KafkaError.UNKNOWN_TOPIC_OR_PART), FailureClass.UNKNOWN_TOPIC),
    (confluent(KafkaError._UNKNOWN_TOPIC), FailureClass.UNKNOWN_TOPIC),
    (ak.MessageSizeTooLargeError(), FailureClass.RECORD_TOO_LARGE),
    (faust_wrapped(ak.MessageSizeTooLargeError()), FailureClass.RECORD_TOO_LARGE),
    (ak.RecordTooLargeError(), FailureClass.RECORD_TOO_LARGE),
    (confluent(KafkaError.MSG_SIZE_TOO_LARGE), FailureClass.RECORD_TOO_LARGE),
    (ak.TopicAuthorizationFailedError(), FailureClass.NOT_AUTHORISED),
    (faust_wrapped(ak.TopicAuthorizationFailedError()), FailureClass.NOT_AUTHORISED),
    (confluent(KafkaError.TOPIC_AUTHORIZATION_FAILED), FailureClass.NOT_AUTHORISED),
    (confluent(KafkaError.CLUSTER_AUTHORIZATION_FAILED), FailureClass.NOT_AUTHORISED),
    (DecodeError(ReasonClass.TRUNCATED, "cut"), FailureClass.UNREADABLE_RECORD),
    (EncodeError("cannot write Command"), FailureClass.UNENCODABLE_OUTPUT),
    (ValueError("a bug"), FailureClass.PROCESSING_ERROR),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: repr(e)[:60])
def test_transient_errors(exc: Exception) -> None:
    assert classify(exc, Step.SEND).transient


@pytest.mark.parametrize(("exc", "failure_class"), PERMANENT, ids=lambda e: repr(e)[:60])
def test_permanent_errors(exc: Exception, failure_class: FailureClass) -> None:
    failure = classify(exc, Step.SEND)
    assert not failure.transient
    assert failure.failure_class is failure_class


def test_unknown_errors_are_classed_by_step() -> None:
    with pytest.raises(ValidationError) as caught:
        SubjectHeader.model_validate_json(b'{"subject_id": "s", "field_of_a_later_release": 1}')
    assert classify(caught.value, Step.LOAD).failure_class is FailureClass.STATE_UNREADABLE
    assert classify(KeyError("x"), Step.STORE).failure_class is FailureClass.STATE_NOT_STORED
    # An unknown librdkafka error is permanent too: only known transient codes are retried.
    failure = classify(confluent(KafkaError.INVALID_CONFIG), Step.CHAIN_HEAD)
    assert not failure.transient


def test_reason_names_the_type_never_the_message() -> None:
    failure = classify(ValueError("cust-1@example.com"), Step.DECIDE)
    assert failure.reason == "processing_error (ValueError)"


def run_retrying(
    outcomes: list[Exception | str], policy: RetryPolicy = FAST
) -> tuple[str | StepFailed, list[Failure]]:
    retries: list[Failure] = []
    calls = iter(outcomes)

    async def call() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def go() -> str:
        return await retrying(Step.SEND, call, policy, lambda _step, f: retries.append(f))

    try:
        return asyncio.run(go()), retries
    except StepFailed as failed:
        return failed, retries


def test_transient_failure_is_retried_and_counted() -> None:
    result, retries = run_retrying([ak.KafkaTimeoutError(), confluent(KafkaError._TRANSPORT), "ok"])
    assert result == "ok"
    assert [r.error for r in retries] == ["KafkaTimeoutError", "KafkaException:_TRANSPORT"]


def test_retries_are_bounded() -> None:
    result, retries = run_retrying([ak.NotLeaderForPartitionError()] * 10)
    assert isinstance(result, StepFailed)
    assert result.failure.transient  # exhausted: the caller stops the worker
    assert isinstance(result.cause, ak.NotLeaderForPartitionError)
    assert len(retries) == FAST.attempts - 1


def test_permanent_failure_is_not_retried() -> None:
    result, retries = run_retrying([ak.MessageSizeTooLargeError(), "never reached"])
    assert isinstance(result, StepFailed)
    assert not result.failure.transient
    assert result.failure.failure_class is FailureClass.RECORD_TOO_LARGE
    assert retries == []
