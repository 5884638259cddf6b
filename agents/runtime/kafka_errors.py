"""Which confluent-kafka errors heal by themselves, and which mean a writer was fenced.

librdkafka flags some errors ``retriable`` (or, inside a transaction,
``txn_requires_abort``: abort and try again). Others are transient in practice
although not flagged: a lost connection, a leader or coordinator moving during
a broker failover, a request that timed out. Those are listed here by code.
Everything else (not authorised, message too large, unsupported, and every
fatal error) does not heal by retrying.
"""

from __future__ import annotations

from typing import Final

from confluent_kafka import KafkaError, KafkaException

TRANSIENT_CODES: Final = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.CONCURRENT_TRANSACTIONS,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.KAFKA_STORAGE_ERROR,
        # Metadata can briefly miss a topic while its leader moves.
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)

#: A newer producer with the same transactional id has taken over.
# A message librdkafka took back unsent because its transaction was aborted (another
# message of it failed): not refused, it goes again in the next transaction.
PURGED_CODES: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})

FENCED_CODES: Final = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTION_COORDINATOR_FENCED,
    }
)


def kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_fenced(exc: BaseException) -> bool:
    error = kafka_error(exc)
    return error is not None and error.code() in FENCED_CODES


def is_transient_error(error: KafkaError) -> bool:
    if error.fatal() or error.code() in FENCED_CODES:
        return False
    return error.retriable() or error.txn_requires_abort() or error.code() in TRANSIENT_CODES


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a transient Kafka error, a timeout, a full local queue."""
    error = kafka_error(exc)
    if error is not None:
        return is_transient_error(error)
    return isinstance(exc, TimeoutError | BufferError)
