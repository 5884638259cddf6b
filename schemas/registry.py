"""The Avro contracts: one ``.avsc`` per message model, parsed once.

``schemas/avro/<group>/<Name>.avsc`` holds the current schema of each record;
nested records (``ExportedRecord``, ``KeptItem``) have their own file and are
referenced by full name. ``schemas/avro/history/<Name>/v<N>.avsc`` keeps every
published version, self-contained (nested records inlined), so that a message
written with any earlier version can still be read.

This module maps model class <-> parsed schema <-> CRC-64-AVRO fingerprint (the
Avro spec's Rabin fingerprint of the Parsing Canonical Form, as used by the
single-object encoding) and converts models to and from Avro record dicts at
the edge. The drift test (``tests/unit/test_schemas_drift.py``) keeps the
models and the ``.avsc`` files in agreement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.audit import AuditEvent
from schemas.base import Frozen
from schemas.commands import Command, CommandAck, ExportedRecord
from schemas.deadletter import DeadLetter
from schemas.events import INPUT_EVENTS, SourceWatermark
from schemas.internal import DueTick
from schemas.responses import KeptItem, RequestResponse

AVRO_DIR = Path(__file__).resolve().parent / "avro"
HISTORY_DIR = AVRO_DIR / "history"
NAMESPACE = "uk.smartcomms.lifecycle"
GROUPS: tuple[str, ...] = ("events", "commands", "audit", "responses", "internal")

# Every message model with an Avro record, in a stable order.
MODELS: tuple[type[Frozen], ...] = (
    *INPUT_EVENTS,
    SourceWatermark,
    Command,
    CommandAck,
    ExportedRecord,
    AuditEvent,
    RequestResponse,
    KeptItem,
    DueTick,
    DeadLetter,
)
# Records that only appear inside other records.
NESTED_MODELS: frozenset[type[Frozen]] = frozenset((ExportedRecord, KeptItem))

AvroSchema = dict[str, Any]
M = TypeVar("M", bound=Frozen)
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


class SchemaCatalogError(Exception):
    """The ``.avsc`` files are missing, malformed or inconsistent."""


def parse_record_schema(source: Any) -> AvroSchema:
    """fastavro-parse a self-contained record schema (fresh named types)."""
    parsed = parse_schema(source, named_schemas={})
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaCatalogError("not an Avro record schema")
    return parsed


def crc64_fingerprint(schema: AvroSchema | str) -> bytes:
    """CRC-64-AVRO fingerprint of a (parsed or canonical) schema, as 8 little-endian bytes."""
    canonical = schema if isinstance(schema, str) else to_parsing_canonical_form(schema)
    # fastavro renders the 64-bit value's little-endian bytes as hex, which is
    # exactly the byte order the single-object encoding puts on the wire.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def expand_references(source: AvroSchema, named: Mapping[str, AvroSchema]) -> AvroSchema:
    """Inline records referenced by full name, so the result is self-contained.

    Each referenced record is inlined at its first occurrence (with an explicit
    namespace) and referred to by name afterwards, as Avro requires.
    """
    defined: set[str] = set()

    def walk(node: Any, namespace: str | None) -> Any:
        if isinstance(node, str):
            if node in named and node not in defined:
                defined.add(node)
                return walk(named[node], None)
            return node
        if isinstance(node, list):
            return [walk(item, namespace) for item in node]
        if isinstance(node, dict):
            ns = node.get("namespace", namespace)
            if node.get("type") in ("record", "enum", "fixed") and "name" in node:
                name = node["name"]
                defined.add(name if "." in name else f"{ns}.{name}" if ns else name)
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key in ("type", "items", "values", "fields"):
                    out[key] = walk(value, ns)
                else:
                    out[key] = value
            return out
        return node

    result = walk(source, None)
    assert isinstance(result, dict)
    return result


@dataclass(frozen=True)
class WriterSchema:
    """A schema a message may have been written with: current or historical."""

    full_name: str
    version: int
    parsed: AvroSchema
    canonical: str
    fingerprint: bytes
    source: AvroSchema


@dataclass(frozen=True)
class SchemaEntry:
    """The current contract of one model."""

    model: type[Frozen]
    full_name: str
    group: str
    path: Path
    source: AvroSchema  # as in the .avsc file (nested records by reference)
    expanded: AvroSchema  # self-contained, docs and defaults kept
    parsed: AvroSchema  # fastavro-parsed, for reading and writing
    canonical: str
    fingerprint: bytes
    version: int
    history: tuple[WriterSchema, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.model.__name__

    @property
    def subject_keyed(self) -> bool:
        """Messages of this type are keyed by ``subject_id`` (co-partitioned topics)."""
        return "subject_id" in self.model.model_fields


class SchemaCatalog:
    """All current and historical schemas, indexed every useful way."""

    def __init__(self, avro_dir: Path = AVRO_DIR) -> None:
        self.avro_dir = avro_dir
        sources = _load_sources(avro_dir)
        self._by_model: dict[type[Frozen], SchemaEntry] = {}
        self._by_name: dict[str, SchemaEntry] = {}
        self._writers: dict[bytes, WriterSchema] = {}
        for model in MODELS:
            full = next((n for n in sources if n.rsplit(".", 1)[-1] == model.__name__), None)
            if full is None:
                raise SchemaCatalogError(f"no .avsc for model {model.__name__}")
            path, source = sources[full]
            expanded = expand_references(source, {n: s for n, (_, s) in sources.items()})
            try:
                parsed = parse_record_schema(expanded)
            except Exception as exc:
                raise SchemaCatalogError(f"{path}: {exc}") from exc
            canonical = to_parsing_canonical_form(parsed)
            fp = crc64_fingerprint(canonical)
            history = _load_history(avro_dir / "history" / model.__name__, full)
            version = max((h.version for h in history), default=0)
            if not history or history[-1].fingerprint != fp:
                # The current schema is not (yet) a recorded version: it is the
                # next one. compat.check_compatibility() reports this.
                version += 1
            entry = SchemaEntry(
                model=model,
                full_name=full,
                group=full.split(".")[-2],
                path=path,
                source=source,
                expanded=expanded,
                parsed=parsed,
                canonical=canonical,
                fingerprint=fp,
                version=version,
                history=history,
            )
            self._by_model[model] = entry
            self._by_name[full] = entry
            self._by_name[model.__name__] = entry
            for writer in history:
                self._add_writer(writer)
            self._add_writer(
                WriterSchema(full, version, parsed, canonical, fp, expanded),
            )

    def _add_writer(self, writer: WriterSchema) -> None:
        known = self._writers.get(writer.fingerprint)
        if known is not None and known.full_name != writer.full_name:
            raise SchemaCatalogError(
                f"fingerprint collision between {known.full_name} and {writer.full_name}"
            )
        self._writers[writer.fingerprint] = writer

    @property
    def entries(self) -> tuple[SchemaEntry, ...]:
        return tuple(self._by_model.values())

    def entry(self, model: type[Frozen] | Frozen) -> SchemaEntry:
        cls = model if isinstance(model, type) else type(model)
        try:
            return self._by_model[cls]
        except KeyError:
            raise KeyError(f"{cls.__name__} has no Avro schema") from None

    def by_name(self, name: str) -> SchemaEntry | None:
        """Entry by full record name or by model class name."""
        return self._by_name.get(name)

    def writer(self, fp: bytes) -> WriterSchema | None:
        """Writer schema (current or historical) with this fingerprint."""
        return self._writers.get(fp)

    @property
    def writers(self) -> tuple[WriterSchema, ...]:
        return tuple(self._writers.values())


def _full_name(source: AvroSchema) -> str:
    name = str(source["name"])
    namespace = source.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _load_sources(avro_dir: Path) -> dict[str, tuple[Path, AvroSchema]]:
    sources: dict[str, tuple[Path, AvroSchema]] = {}
    for group in GROUPS:
        for path in sorted((avro_dir / group).glob("*.avsc")):
            try:
                source = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SchemaCatalogError(f"{path}: {exc}") from exc
            full = _full_name(source)
            if full != f"{NAMESPACE}.{group}.{path.stem}":
                raise SchemaCatalogError(f"{path}: record {full} does not match its file name")
            sources[full] = (path, source)
    return sources


def _load_history(directory: Path, full_name: str) -> tuple[WriterSchema, ...]:
    versions: list[WriterSchema] = []
    if not directory.is_dir():
        return ()
    for path in directory.iterdir():
        match = _VERSION_FILE.match(path.name)
        if not match:
            continue
        source = json.loads(path.read_text(encoding="utf-8"))
        if _full_name(source) != full_name:
            raise SchemaCatalogError(f"{path}: record {_full_name(source)} is not {full_name}")
        parsed = parse_record_schema(source)
        canonical = to_parsing_canonical_form(parsed)
        versions.append(
            WriterSchema(
                full_name=full_name,
                version=int(match.group(1)),
                parsed=parsed,
                canonical=canonical,
                fingerprint=crc64_fingerprint(canonical),
                source=source,
            )
        )
    versions.sort(key=lambda w: w.version)
    if [w.version for w in versions] != list(range(1, len(versions) + 1)):
        raise SchemaCatalogError(f"{directory}: versions must be v1..vN without gaps")
    return tuple(versions)


@cache
def catalog() -> SchemaCatalog:
    """The process-wide catalog of the packaged ``.avsc`` files (parsed once)."""
    return SchemaCatalog()


def to_record(model: Frozen) -> dict[str, Any]:
    """Model -> Avro record dict.

    Datetimes stay aware datetimes (fastavro writes timestamp-millis from
    them), dates stay dates, enums become their string values, nested models
    become dicts.
    """
    return model.model_dump(mode="python")


def from_record(model: type[M], record: Mapping[str, Any], *, now: datetime | None = None) -> M:
    """Avro record dict -> validated model.

    ``now`` is the injected clock's reading; ``EventTime`` fields are checked
    against it rather than the wall clock.
    """
    context = {"now": now} if now is not None else None
    return model.model_validate(record, context=context)
