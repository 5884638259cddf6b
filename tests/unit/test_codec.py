"""Wire format: both framings, every schema, evolution, and every decode error class."""

from __future__ import annotations

import io
import json
import struct
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import given, settings

from schemas.base import Frozen
from schemas.commands import Command, CommandAck
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import INPUT_EVENTS, CallRecorded
from schemas.registry import catalog, parse_record_schema
from streams.codec import (
    SINGLE_OBJECT_MARKER,
    Codec,
    DecodeError,
    RegistryUnavailable,
)
from tests.unit.test_schemas_strategies import NOW, PROPERTY, any_model, model_strategy


class FakeRegistry:
    """In-process stand-in for SchemaRegistryClient's register_schema/get_schema."""

    def __init__(self, first_id: int = 100) -> None:
        self.by_id: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.next_id = first_id
        self.fail_with: Exception | None = None

    def register_schema(self, subject_name: str, schema: Schema) -> int:
        assert schema.schema_type == "AVRO"
        assert schema.schema_str is not None
        for schema_id, text in self.by_id.items():
            if text == schema.schema_str:
                self.subjects.setdefault(subject_name, []).append(schema_id)
                return schema_id
        schema_id = self.next_id
        self.next_id += 1
        self.by_id[schema_id] = schema.schema_str
        self.subjects.setdefault(subject_name, []).append(schema_id)
        return schema_id

    def get_schema(self, schema_id: int) -> Schema:
        if self.fail_with is not None:
            raise self.fail_with
        if schema_id not in self.by_id:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(self.by_id[schema_id], "AVRO")


def call(**overrides: Any) -> CallRecorded:
    data: dict[str, Any] = {
        "event_id": "evt-1",
        "subject_id": "cust-42",
        "source_system": "telephony",
        "event_time": NOW - timedelta(hours=1),
        "recording_id": "rec-9",
        "system": "recorder",
    }
    data.update(overrides)
    return CallRecorded.model_validate(data, context={"now": NOW})


def decode(codec: Codec, value: bytes | None, key: bytes | None = None, **kw: Any) -> Frozen:
    return codec.decode(value, key, now=NOW, **kw)


def reason_of(
    codec: Codec, value: bytes | None, key: bytes | None = b"cust-42", **kw: Any
) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(value, key, now=NOW, **kw)
    return info.value


# -- round trips ----------------------------------------------------------------


@settings(PROPERTY, max_examples=300)
@given(any_model())
def test_single_object_round_trip(model: Frozen) -> None:
    codec = Codec()
    data = codec.encode(model)
    assert data[:2] == SINGLE_OBJECT_MARKER
    assert data[2:10] == catalog().entry(model).fingerprint
    assert decode(codec, data, codec.key_for(model)) == model


@settings(PROPERTY, max_examples=300)
@given(any_model())
def test_confluent_round_trip(model: Frozen) -> None:
    registry = FakeRegistry()
    writer = Codec(registry=registry)
    data = writer.encode(model)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert registry.by_id[schema_id] == json.dumps(catalog().entry(model).expanded)
    assert registry.subjects[catalog().entry(model).full_name] == [schema_id]
    # A fresh reader learns the id from the registry.
    reader = Codec(registry=registry)
    assert decode(reader, data, writer.key_for(model)) == model


@pytest.mark.parametrize("model", [*INPUT_EVENTS, Command, CommandAck], ids=lambda m: m.__name__)
def test_each_subject_keyed_schema_round_trips(model: type[Frozen]) -> None:
    @settings(PROPERTY, max_examples=25)
    @given(model_strategy(model))
    def check(instance: Frozen) -> None:
        codec = Codec()
        key = codec.key_for(instance)
        assert key is not None
        assert decode(codec, codec.encode(instance), key) == instance

    check()


def test_single_object_decoder_reads_confluent_when_registry_known_and_vice_versa() -> None:
    registry = FakeRegistry()
    both = Codec(registry=registry)
    plain = Codec()
    event = call()
    assert decode(both, plain.encode(event), b"cust-42") == event
    assert decode(both, both.encode_single_object(event), b"cust-42") == event
    # Without a registry, Confluent framing cannot be resolved.
    err = reason_of(plain, both.encode(event))
    assert err.reason_class is ReasonClass.UNKNOWN_SCHEMA


def test_registry_missing_id_is_unknown_schema_and_outage_is_not_a_dead_letter() -> None:
    registry = FakeRegistry()
    codec = Codec(registry=registry)
    event = call()
    data = codec.encode(event)
    unknown = b"\x00" + struct.pack(">I", 999) + data[5:]
    assert reason_of(Codec(registry=registry), unknown).reason_class is ReasonClass.UNKNOWN_SCHEMA
    registry.fail_with = SchemaRegistryError(503, 50301, "unavailable")
    with pytest.raises(RegistryUnavailable):
        decode(Codec(registry=registry), data, b"cust-42")


def test_registry_schema_of_a_foreign_record_is_unknown_schema() -> None:
    registry = FakeRegistry()
    foreign = {"type": "record", "name": "x.Other", "fields": [{"name": "a", "type": "string"}]}
    schema_id = registry.register_schema("x.Other", Schema(json.dumps(foreign), "AVRO"))
    data = b"\x00" + struct.pack(">I", schema_id) + b"\x02a"
    err = reason_of(Codec(registry=registry), data)
    assert err.reason_class is ReasonClass.UNKNOWN_SCHEMA


# -- evolution ------------------------------------------------------------------


def _dead_letter() -> DeadLetter:
    return DeadLetter(
        topic="lifecycle.in.crm",
        partition=3,
        offset=17,
        original_key=b"cust-42",
        original_value=b"\x00\x01garbage",
        reason_class=ReasonClass.BAD_FRAMING,
        reason="unknown framing byte 0x00",
        failed_at=NOW,
        original_value_size=9,
    )


def test_v1_writer_is_read_by_current_reader() -> None:
    entry = catalog().entry(DeadLetter)
    v1 = entry.history[0]
    assert v1.version == 1
    assert v1.fingerprint != entry.fingerprint
    record = _dead_letter().model_dump()
    del record["original_value_size"]
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, record)
    data = SINGLE_OBJECT_MARKER + v1.fingerprint + body.getvalue()
    decoded = decode(Codec(), data)
    assert decoded == _dead_letter().model_copy(update={"original_value_size": None})


def test_current_writer_is_read_by_v1_reader() -> None:
    entry = catalog().entry(DeadLetter)
    v1 = entry.history[0]
    data = Codec().encode(_dead_letter())
    record = schemaless_reader(io.BytesIO(data[10:]), entry.parsed, v1.parsed)
    assert isinstance(record, dict)
    assert "original_value_size" not in record
    assert record["reason"] == "unknown framing byte 0x00"
    assert record["original_value"] == b"\x00\x01garbage"


def test_parked_dead_letter_is_read_by_v2_reader() -> None:
    # A v2 tool reading a parked item still sees where it came from and why.
    entry = catalog().entry(DeadLetter)
    v2 = entry.history[1]
    assert v2.version == 2
    parked = _dead_letter().model_copy(
        update={
            "reason_class": ReasonClass.INVALID_MODEL,
            "failure_class": FailureClass.UNKNOWN_TOPIC,
        }
    )
    data = Codec().encode(parked)
    record = schemaless_reader(io.BytesIO(data[10:]), entry.parsed, v2.parsed)
    assert isinstance(record, dict)
    assert "failure_class" not in record
    assert (record["reason_class"], record["offset"]) == ("invalid_model", 17)
    assert decode(Codec(), data) == parked


def test_v1_writer_through_the_registry_is_resolved() -> None:
    v1 = catalog().entry(DeadLetter).history[0]
    registry = FakeRegistry()
    schema_id = registry.register_schema(v1.full_name, Schema(json.dumps(v1.source), "AVRO"))
    record = _dead_letter().model_dump()
    del record["original_value_size"]
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, record)
    data = b"\x00" + struct.pack(">I", schema_id) + body.getvalue()
    decoded = decode(Codec(registry=registry), data)
    assert isinstance(decoded, DeadLetter)
    assert decoded.original_value_size is None


def test_unresolvable_writer_is_unknown_schema() -> None:
    # Same record name, but a field the reader needs without a default is missing.
    source = json.loads(json.dumps(catalog().entry(CallRecorded).expanded))
    source["fields"] = [f for f in source["fields"] if f["name"] != "recording_id"]
    registry = FakeRegistry()
    schema_id = registry.register_schema("x", Schema(json.dumps(source), "AVRO"))
    record = call().model_dump()
    del record["recording_id"]
    body = io.BytesIO()
    schemaless_writer(body, parse_record_schema(source), record)
    data = b"\x00" + struct.pack(">I", schema_id) + body.getvalue()
    assert reason_of(Codec(registry=registry), data).reason_class is ReasonClass.UNKNOWN_SCHEMA


# -- error classes ----------------------------------------------------------------


def test_framing_errors() -> None:
    codec = Codec()
    good = codec.encode(call())
    assert reason_of(codec, None).reason_class is ReasonClass.BAD_FRAMING
    assert reason_of(codec, b"").reason_class is ReasonClass.BAD_FRAMING
    assert reason_of(codec, b"{}").reason_class is ReasonClass.BAD_FRAMING
    assert reason_of(codec, b"\xc3\x02" + good[2:]).reason_class is ReasonClass.BAD_FRAMING
    for cut in range(2, 10):
        assert reason_of(codec, good[:cut]).reason_class is ReasonClass.TRUNCATED
    for cut in range(1, 5):
        assert reason_of(codec, b"\x00\x00\x00\x01"[:cut]).reason_class is ReasonClass.TRUNCATED
    assert reason_of(codec, good[:-1]).reason_class is ReasonClass.TRUNCATED
    assert reason_of(codec, good[:2] + bytes(8) + good[10:]).reason_class is (
        ReasonClass.UNKNOWN_SCHEMA
    )
    assert reason_of(codec, good + b"\x00").reason_class is ReasonClass.INVALID_AVRO


def test_invalid_avro_enum_index() -> None:
    codec = Codec()
    event = CommandAck(
        command_id="cmd-1", subject_id="cust-42", system="crm", outcome="done", acked_at=NOW
    )
    data = bytearray(codec.encode(event))
    # command_id, subject_id, system are strings; the enum index follows them.
    offset = 10 + sum(1 + len(s) for s in ("cmd-1", "cust-42", "crm"))
    assert data[offset] == 0  # zig-zag 0 -> "done"
    data[offset] = 0x7E  # zig-zag 63: no such symbol
    assert reason_of(codec, bytes(data)).reason_class is ReasonClass.INVALID_AVRO


def test_invalid_model_reason_names_fields_not_values() -> None:
    codec = Codec()
    entry = catalog().entry(CallRecorded)
    record = call().model_dump()
    record["subject_id"] = "not an id@example.com"
    record["event_time"] = NOW + timedelta(days=3)
    body = io.BytesIO()
    schemaless_writer(body, entry.parsed, record)
    data = SINGLE_OBJECT_MARKER + entry.fingerprint + body.getvalue()
    err = reason_of(codec, data, key=b"not an id@example.com")
    assert err.reason_class is ReasonClass.INVALID_MODEL
    assert "subject_id" in err.reason
    assert "event_time" in err.reason
    assert "example.com" not in err.reason
    assert str(NOW.year) not in err.reason


def test_event_time_is_checked_against_the_injected_clock() -> None:
    codec = Codec()
    data = codec.encode(call(event_time=NOW))
    assert decode(codec, data, b"cust-42") == call(event_time=NOW)
    with pytest.raises(DecodeError) as info:
        codec.decode(data, b"cust-42", now=NOW - timedelta(days=2))
    assert info.value.reason_class is ReasonClass.INVALID_MODEL


def test_oversize() -> None:
    codec = Codec(max_message_bytes=1024)
    event = call(recording_id="r" * 120)
    assert decode(codec, codec.encode(event), b"cust-42") == event
    big = codec.encode(event) + b"\x00" * 1024
    assert reason_of(codec, big).reason_class is ReasonClass.OVERSIZE


def test_keys() -> None:
    codec = Codec()
    data = codec.encode(call())
    assert reason_of(codec, data, key=None).reason_class is ReasonClass.MISSING_KEY
    err = reason_of(codec, data, key=b"cust-43")
    assert err.reason_class is ReasonClass.KEY_MISMATCH
    assert "cust-4" not in err.reason
    assert decode(codec, data, None, check_key=False) == call()
    # Messages not keyed by subject need no key.
    assert decode(codec, codec.encode(_dead_letter())) == _dead_letter()


def test_unexpected_type() -> None:
    codec = Codec()
    data = codec.encode(_dead_letter())
    err = reason_of(codec, data, expected=INPUT_EVENTS)
    assert err.reason_class is ReasonClass.UNEXPECTED_TYPE
    assert decode(codec, codec.encode(call()), b"cust-42", expected=INPUT_EVENTS) == call()


def test_key_for_is_the_subject_id() -> None:
    codec = Codec()
    assert codec.key_for(call()) == b"cust-42"
    assert codec.key_for(_dead_letter()) is None
