"""The dead-letter path never raises on bad input and never loses a message."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.base import Frozen
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import CallRecorded
from streams.codec import Codec
from streams.deadletter import Decoded, decode_or_dead_letter, log_dead_letter, parked
from tests.unit.test_schemas_strategies import NOW, PROPERTY, any_model

CODEC = Codec()
TOPIC = "lifecycle.in.telephony"


def run(
    key: bytes | None, value: bytes | None, counts: Counter[str] | None = None
) -> Decoded | DeadLetter:
    result = decode_or_dead_letter(
        key,
        value,
        TOPIC,
        2,
        41,
        NOW,
        codec=CODEC,
        on_dead_letter=(lambda c: counts.update([c])) if counts is not None else None,
    )
    assert isinstance(result, Decoded | DeadLetter)
    if isinstance(result, DeadLetter):
        assert result.reason_class in ReasonClass
        assert result.reason
        assert (result.topic, result.partition, result.offset) == (TOPIC, 2, 41)
        assert result.original_value == value
        assert result.original_key == key
        assert result.failed_at == NOW
        # A dead letter is itself a valid message.
        assert CODEC.decode(CODEC.encode(result), now=NOW) == result
    return result


@settings(PROPERTY, max_examples=500)
@given(st.binary(max_size=300), st.none() | st.binary(max_size=20))
def test_random_bytes(value: bytes, key: bytes | None) -> None:
    run(key, value)


@settings(PROPERTY, max_examples=300)
@given(st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header(body: bytes) -> None:
    fp = CODEC.schemas.entry(CallRecorded).fingerprint
    run(b"cust-42", b"\xc3\x01" + fp + body)


@st.composite
def valid_message(draw: st.DrawFn) -> tuple[Frozen, bytes, bytes | None]:
    model = draw(any_model())
    return model, CODEC.encode(model), CODEC.key_for(model)


@settings(PROPERTY, max_examples=300)
@given(valid_message(), st.data())
def test_bit_flips(message: tuple[Frozen, bytes, bytes | None], data: st.DataObject) -> None:
    _, value, key = message
    flipped = bytearray(value)
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(value) - 1))
        flipped[index] ^= 1 << data.draw(st.integers(0, 7))
    result = run(key, bytes(flipped))
    if isinstance(result, Decoded):
        # Whatever survived a flip is a complete, valid message of a known type.
        assert CODEC.decode(CODEC.encode(result.model), key, now=NOW) == result.model


@settings(PROPERTY, max_examples=300)
@given(valid_message(), st.data())
def test_truncation_is_always_dead_lettered(
    message: tuple[Frozen, bytes, bytes | None], data: st.DataObject
) -> None:
    _, value, key = message
    cut = data.draw(st.integers(0, len(value) - 1))
    counts: Counter[str] = Counter()
    result = run(key, value[:cut], counts)
    # Avro binary is prefix-free: a strict prefix never decodes.
    assert isinstance(result, DeadLetter)
    assert result.reason_class in (
        ReasonClass.BAD_FRAMING,
        ReasonClass.TRUNCATED,
        ReasonClass.INVALID_AVRO,
    )
    assert counts == Counter([result.reason_class.value])


@settings(PROPERTY, max_examples=300)
@given(valid_message(), st.binary(min_size=1, max_size=50))
def test_appended_bytes_are_dead_lettered(
    message: tuple[Frozen, bytes, bytes | None], extra: bytes
) -> None:
    _, value, key = message
    result = run(key, value + extra)
    assert isinstance(result, DeadLetter)
    assert result.reason_class is ReasonClass.INVALID_AVRO


@settings(PROPERTY, max_examples=200)
@given(valid_message())
def test_valid_messages_decode(message: tuple[Frozen, bytes, bytes | None]) -> None:
    model, value, key = message
    counts: Counter[str] = Counter()
    result = run(key, value, counts)
    assert isinstance(result, Decoded)
    assert result.model == model
    assert (result.key, result.topic, result.partition, result.offset) == (key, TOPIC, 2, 41)
    assert not counts


def test_oversize_dead_letter_still_fits() -> None:
    codec = Codec(max_message_bytes=20_000)
    value = b"\xc3\x01" + b"x" * 50_000
    result = decode_or_dead_letter(b"k" * 10_000, value, TOPIC, 0, 5, NOW, codec=codec)
    assert isinstance(result, DeadLetter)
    assert result.reason_class is ReasonClass.OVERSIZE
    assert result.original_value_size == len(value)
    assert result.original_value is not None
    assert value.startswith(result.original_value)
    encoded = codec.encode(result)
    assert len(encoded) <= codec.max_message_bytes
    assert codec.decode(encoded, now=NOW) == result


def test_log_line_has_no_payload(caplog: pytest.LogCaptureFixture) -> None:
    secret_key = b"cust-secret-77"
    value = CODEC.encode(
        CallRecorded.model_validate(
            {
                "event_id": "e-1",
                "subject_id": "cust-secret-77",
                "source_system": "telephony",
                "event_time": NOW,
                "recording_id": "rec-private",
                "system": "recorder",
            },
            context={"now": NOW},
        )
    )
    result = run(b"someone-else", value)
    assert isinstance(result, DeadLetter)
    assert result.reason_class is ReasonClass.KEY_MISMATCH
    with caplog.at_level(logging.WARNING):
        log_dead_letter(result)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "\n" not in line
    assert "class=key_mismatch" in line
    assert "offset=41" in line
    for secret in (secret_key.decode(), "rec-private", "someone-else"):
        assert secret not in line
        assert secret not in result.reason


def test_parked_item_keeps_the_message_and_fits(caplog: pytest.LogCaptureFixture) -> None:
    codec = Codec(max_message_bytes=20_000)
    value = b"\xc3\x01" + b"y" * 50_000
    dead = parked(
        b"cust-1",
        value,
        TOPIC,
        3,
        7,
        NOW,
        failure_class=FailureClass.UNKNOWN_TOPIC,
        reason="command to t.cmd.gone parked: unknown_topic (UnknownTopicOrPartitionError)",
        max_message_bytes=codec.max_message_bytes,
    )
    assert (dead.topic, dead.partition, dead.offset) == (TOPIC, 3, 7)
    assert dead.failure_class is FailureClass.UNKNOWN_TOPIC
    assert dead.reason_class is ReasonClass.INVALID_MODEL
    assert dead.original_value_size == len(value)
    assert dead.original_value is not None
    assert value.startswith(dead.original_value)
    encoded = codec.encode(dead)
    assert len(encoded) <= codec.max_message_bytes
    assert codec.decode(encoded, now=NOW) == dead
    with caplog.at_level(logging.WARNING):
        log_dead_letter(dead)
    assert "parked=unknown_topic" in caplog.records[0].getMessage()
