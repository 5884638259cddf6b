"""Wire format of every pipeline message.

Default framing is the Avro *single-object encoding*::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint | Avro binary body

The fingerprint names the writer schema; the catalog knows every current and
historical version (``schemas/avro/history``), so a message written with an
older (or newer, once recorded) version is resolved to the current reader
schema by Avro's schema-resolution rules.

When ``Settings.schema_registry_url`` is set, messages are written with the
Confluent framing instead::

    00 | 4-byte big-endian schema id | Avro binary body

with schemas registered under the record's full name (RecordNameStrategy,
since one topic carries several record types). The decoder accepts both
framings whatever is configured. The registry path is unit-tested against an
in-process fake of the two client methods used (``register_schema`` and
``get_schema``); it has not been run against a real Schema Registry here.

Decoding never quotes the payload in an error: reasons name fields, schema
names and error types only, because payloads carry personal data and reasons
end up in logs and on the dead-letter topic.
"""

from __future__ import annotations

import io
import json
import struct
from datetime import datetime
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from pydantic import ValidationError

from schemas.base import Frozen
from schemas.deadletter import ReasonClass
from schemas.registry import (
    SchemaCatalog,
    SchemaEntry,
    catalog,
    crc64_fingerprint,
    parse_record_schema,
    to_record,
)
from streams.settings import Settings

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER = 5
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000


class DecodeError(Exception):
    """A message that cannot be accepted; ``reason`` never quotes the payload."""

    def __init__(self, reason_class: ReasonClass, reason: str) -> None:
        super().__init__(f"{reason_class.value}: {reason}")
        self.reason_class = reason_class
        self.reason = reason


class EncodeError(Exception):
    """A model could not be written with its schema (a bug, not bad input)."""


class RegistryUnavailable(Exception):
    """The Schema Registry could not be asked; retry rather than dead-letter."""


class RegistrySchema(Protocol):
    @property
    def schema_str(self) -> str | None: ...


class RegistryClient(Protocol):
    """The part of ``confluent_kafka.schema_registry.SchemaRegistryClient`` we use."""

    def register_schema(self, subject_name: str, schema: Any) -> int: ...

    def get_schema(self, schema_id: int) -> RegistrySchema: ...


def registry_client_from_settings(settings: Settings) -> RegistryClient | None:
    if not settings.schema_registry_url:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client: RegistryClient = SchemaRegistryClient({"url": settings.schema_registry_url})
    return client


class Codec:
    """Encodes models to bytes and decodes bytes to validated models."""

    def __init__(
        self,
        *,
        schemas: SchemaCatalog | None = None,
        registry: RegistryClient | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.schemas = schemas or catalog()
        self.registry = registry
        self.max_message_bytes = max_message_bytes
        self._ids_by_name: dict[str, int] = {}
        # Registry id -> (reader entry, parsed writer schema, same as current?)
        self._by_id: dict[int, tuple[SchemaEntry, dict[str, Any], bool]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Codec:
        return cls(
            registry=registry_client_from_settings(settings),
            max_message_bytes=settings.max_message_bytes,
        )

    # -- encoding -----------------------------------------------------------

    def encode(self, model: Frozen) -> bytes:
        """Model -> framed bytes (Confluent framing when a registry is configured)."""
        entry = self.schemas.entry(model)
        body = self._body(entry, model)
        if self.registry is not None:
            return struct.pack(">bI", CONFLUENT_MAGIC, self._schema_id(entry)) + body
        return SINGLE_OBJECT_MARKER + entry.fingerprint + body

    def encode_single_object(self, model: Frozen) -> bytes:
        """Model -> single-object encoding, whatever is configured."""
        entry = self.schemas.entry(model)
        return SINGLE_OBJECT_MARKER + entry.fingerprint + self._body(entry, model)

    def key_for(self, model: Frozen) -> bytes | None:
        """Message key: the UTF-8 subject id for subject-keyed messages, else None."""
        subject_id = getattr(model, "subject_id", None)
        return subject_id.encode() if isinstance(subject_id, str) else None

    def _body(self, entry: SchemaEntry, model: Frozen) -> bytes:
        out = io.BytesIO()
        try:
            schemaless_writer(out, entry.parsed, to_record(model))
        except Exception as exc:  # a model/schema drift bug; the drift test prevents it
            raise EncodeError(f"cannot write {entry.name}: {type(exc).__name__}: {exc}") from exc
        return out.getvalue()

    def _schema_id(self, entry: SchemaEntry) -> int:
        schema_id = self._ids_by_name.get(entry.full_name)
        if schema_id is None:
            assert self.registry is not None
            from confluent_kafka.schema_registry import Schema

            schema = Schema(json.dumps(entry.expanded), "AVRO")
            schema_id = self.registry.register_schema(entry.full_name, schema)
            self._ids_by_name[entry.full_name] = schema_id
            self._by_id[schema_id] = (entry, entry.parsed, True)
        return schema_id

    # -- decoding -----------------------------------------------------------

    def decode(
        self,
        value: bytes | None,
        key: bytes | None = None,
        *,
        now: datetime,
        expected: tuple[type[Frozen], ...] | None = None,
        check_key: bool = True,
    ) -> Frozen:
        """Framed bytes -> validated model of the current schema, or ``DecodeError``.

        ``now`` is the injected clock (event times are checked against it).
        ``expected`` restricts the accepted record types (e.g. input events on
        an input topic). With ``check_key``, subject-keyed messages must carry
        their subject id as the key.
        """
        if value is None or len(value) == 0:
            raise DecodeError(ReasonClass.BAD_FRAMING, "empty value (tombstone or no payload)")
        if len(value) > self.max_message_bytes:
            raise DecodeError(
                ReasonClass.OVERSIZE,
                f"value is {len(value)} bytes, limit is {self.max_message_bytes}",
            )
        entry, writer, same, body = self._writer_for(value)
        if expected is not None and entry.model not in expected:
            raise DecodeError(
                ReasonClass.UNEXPECTED_TYPE, f"{entry.name} is not accepted on this topic"
            )
        record = _read_body(body, writer, None if same else entry.parsed, entry.name)
        try:
            model = entry.model.model_validate(record, context={"now": now})
        except ValidationError as exc:
            raise DecodeError(ReasonClass.INVALID_MODEL, _describe(entry.name, exc)) from None
        if check_key and entry.subject_keyed:
            if key is None:
                raise DecodeError(
                    ReasonClass.MISSING_KEY, f"{entry.name} needs its subject_id as key"
                )
            if key != getattr(model, "subject_id", "").encode():
                raise DecodeError(
                    ReasonClass.KEY_MISMATCH, f"message key is not the {entry.name}'s subject_id"
                )
        return model

    def _writer_for(self, value: bytes) -> tuple[SchemaEntry, dict[str, Any], bool, bytes]:
        if value[:2] == SINGLE_OBJECT_MARKER:
            if len(value) < SINGLE_OBJECT_HEADER:
                raise DecodeError(ReasonClass.TRUNCATED, "single-object header is cut short")
            fp = value[2:SINGLE_OBJECT_HEADER]
            writer = self.schemas.writer(fp)
            if writer is None:
                raise DecodeError(
                    ReasonClass.UNKNOWN_SCHEMA, f"no schema with fingerprint {fp.hex()}"
                )
            entry = self.schemas.by_name(writer.full_name)
            assert entry is not None
            same = writer.fingerprint == entry.fingerprint
            return entry, writer.parsed, same, value[SINGLE_OBJECT_HEADER:]
        if value[0] == CONFLUENT_MAGIC:
            if len(value) < CONFLUENT_HEADER:
                raise DecodeError(ReasonClass.TRUNCATED, "Confluent header is cut short")
            (schema_id,) = struct.unpack(">I", value[1:CONFLUENT_HEADER])
            entry, parsed, same = self._by_registry_id(schema_id)
            return entry, parsed, same, value[CONFLUENT_HEADER:]
        if value[0] == SINGLE_OBJECT_MARKER[0]:
            raise DecodeError(ReasonClass.BAD_FRAMING, "bad single-object marker")
        raise DecodeError(ReasonClass.BAD_FRAMING, f"unknown framing byte 0x{value[0]:02x}")

    def _by_registry_id(self, schema_id: int) -> tuple[SchemaEntry, dict[str, Any], bool]:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self.registry is None:
            raise DecodeError(
                ReasonClass.UNKNOWN_SCHEMA, f"schema id {schema_id} but no registry is configured"
            )
        try:
            schema_str = self.registry.get_schema(schema_id).schema_str
        except Exception as exc:
            if getattr(exc, "http_status_code", None) == 404:
                raise DecodeError(
                    ReasonClass.UNKNOWN_SCHEMA, f"registry has no schema id {schema_id}"
                ) from None
            raise RegistryUnavailable(f"schema id {schema_id}: {exc}") from exc
        try:
            parsed = parse_record_schema(json.loads(schema_str or ""))
            name = str(parsed["name"])
        except Exception:
            raise DecodeError(
                ReasonClass.UNKNOWN_SCHEMA, f"registry schema id {schema_id} is not an Avro record"
            ) from None
        entry = self.schemas.by_name(name)
        if entry is None:
            raise DecodeError(
                ReasonClass.UNKNOWN_SCHEMA,
                f"registry schema id {schema_id} is unknown record {name}",
            )
        same = crc64_fingerprint(to_parsing_canonical_form(parsed)) == entry.fingerprint
        result = (entry, parsed, same)
        self._by_id[schema_id] = result
        return result


def _read_body(
    body: bytes, writer: dict[str, Any], reader: dict[str, Any] | None, name: str
) -> dict[str, Any]:
    buffer = io.BytesIO(body)
    try:
        record = schemaless_reader(buffer, writer, reader)
    except EOFError:
        raise DecodeError(ReasonClass.TRUNCATED, f"{name} body ends early") from None
    except Exception as exc:  # fastavro raises many types on garbage; none is ours to raise
        kind = type(exc).__name__
        if kind == "SchemaResolutionError":
            raise DecodeError(
                ReasonClass.UNKNOWN_SCHEMA, f"writer schema cannot be resolved to current {name}"
            ) from None
        raise DecodeError(
            ReasonClass.INVALID_AVRO, f"{name} body is not valid Avro ({kind})"
        ) from None
    if buffer.tell() != len(body):
        raise DecodeError(
            ReasonClass.INVALID_AVRO, f"{len(body) - buffer.tell()} trailing bytes after {name}"
        )
    if not isinstance(record, dict):
        raise DecodeError(ReasonClass.INVALID_AVRO, f"{name} body is not a record")
    return record


def _describe(name: str, exc: ValidationError) -> str:
    """Validation failure without input values: field names and error types only."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:10]:
        loc = error["loc"]
        field = str(loc[0]) if loc and isinstance(loc[0], str) else "?"
        parts.append(f"{field} ({error['type']})")
    more = f" and {len(errors) - 10} more" if len(errors) > 10 else ""
    return f"{name}: {len(errors)} invalid field(s): {', '.join(parts)}{more}"
