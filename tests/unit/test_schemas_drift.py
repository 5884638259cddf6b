"""Drift test: every pydantic model and its .avsc say the same thing.

The expected Avro shape is derived here from the model's annotations,
independently of how ``schemas.registry`` reads the files, and compared with
the ``.avsc``: field names and order, types (including optionality), enum
names and symbols, nested record names, defaults; plus docs and namespaces.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import schemas.audit
import schemas.commands
import schemas.deadletter
import schemas.events
import schemas.internal
import schemas.responses
from schemas.base import Frozen
from schemas.events import Event
from schemas.registry import AVRO_DIR, GROUPS, MODELS, NAMESPACE, SchemaCatalog, catalog

MODULE_GROUPS = {
    schemas.events.__name__: "events",
    schemas.commands.__name__: "commands",
    schemas.audit.__name__: "audit",
    schemas.responses.__name__: "responses",
    schemas.internal.__name__: "internal",
    schemas.deadletter.__name__: "internal",
}


def _group(cls: type) -> str:
    return MODULE_GROUPS[cls.__module__]


def expected_type(owner: type[BaseModel], annotation: Any) -> Any:
    """The normalised Avro type a model annotation must have."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return expected_type(owner, args[0])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1, f"{owner.__name__}: only T | None unions are supported"
        return ("union", ("null", expected_type(owner, inner[0])))
    if origin is list:
        return ("array", expected_type(owner, args[0]))
    if origin is dict:
        assert expected_type(owner, args[0]) == "string", "Avro map keys are strings"
        return ("map", expected_type(owner, args[1]))
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return ("enum", annotation.__name__, tuple(m.value for m in annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("record", f"{NAMESPACE}.{_group(annotation)}.{annotation.__name__}")
    simple = {
        str: "string",
        bytes: "bytes",
        bool: "boolean",
        int: "long",
        datetime: ("long", "timestamp-millis"),
        date: ("int", "date"),
    }
    if annotation in simple:
        return simple[annotation]
    raise AssertionError(f"{owner.__name__}: no Avro mapping for {annotation!r}")


def actual_type(node: Any, enums: dict[str, Any]) -> Any:
    """Normalise an .avsc type; enums defined earlier in the file are resolved."""
    if isinstance(node, list):
        return ("union", tuple(actual_type(n, enums) for n in node))
    if isinstance(node, str):
        if node in enums:
            return enums[node]
        if "." in node:
            return ("record", node)
        return node
    kind = node["type"]
    if kind == "enum":
        result = ("enum", node["name"], tuple(node["symbols"]))
        assert node.get("doc"), f"enum {node['name']} has no doc"
        enums[node["name"]] = result
        return result
    if kind == "array":
        return ("array", actual_type(node["items"], enums))
    if kind == "map":
        return ("map", actual_type(node["values"], enums))
    if kind in ("long", "int") and "logicalType" in node:
        return (kind, node["logicalType"])
    if kind == "record":
        raise AssertionError("nested records must be separate .avsc files referenced by name")
    return actual_type(kind, enums)


def expected_default(info: Any) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    if info.default is PydanticUndefined:
        return PydanticUndefined
    value = info.default
    return value.value if isinstance(value, StrEnum) else value


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_model_and_avsc_agree(model: type[Frozen]) -> None:
    entry = catalog().entry(model)
    source = entry.source
    group = _group(model)
    assert entry.path == AVRO_DIR / group / f"{model.__name__}.avsc"
    assert source["name"] == model.__name__
    assert source["namespace"] == f"{NAMESPACE}.{group}"
    assert source.get("doc"), "record has no doc"

    avro_fields = source["fields"]
    assert [f["name"] for f in avro_fields] == list(model.model_fields)
    enums: dict[str, Any] = {}
    for avro_field, (name, info) in zip(avro_fields, model.model_fields.items(), strict=True):
        assert avro_field.get("doc"), f"{name} has no doc"
        assert actual_type(avro_field["type"], enums) == expected_type(model, info.annotation), name
        default = expected_default(info)
        if default is PydanticUndefined:
            assert "default" not in avro_field, f"{name}: required in the model, defaulted in Avro"
        else:
            assert "default" in avro_field, f"{name}: defaulted in the model, required in Avro"
            assert avro_field["default"] == default, name


def _all_message_models() -> set[type[Frozen]]:
    found: set[type[Frozen]] = set()
    stack = list(Frozen.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__ in MODULE_GROUPS and cls is not Event:
            found.add(cls)
    return found


def test_every_message_model_has_a_schema() -> None:
    assert _all_message_models() == set(MODELS)


def test_every_avsc_belongs_to_a_model() -> None:
    names = {m.__name__ for m in MODELS}
    files = {p.stem for g in GROUPS for p in (AVRO_DIR / g).glob("*.avsc")}
    assert files == names


def test_fingerprints_are_unique_and_stable() -> None:
    fresh = SchemaCatalog()
    prints = [e.fingerprint for e in fresh.entries]
    assert len(set(prints)) == len(prints)
    assert prints == [e.fingerprint for e in catalog().entries]
    assert all(len(p) == 8 for p in prints)


def test_fingerprint_is_the_avro_spec_rabin() -> None:
    # Reference implementation from the Avro specification ("Schema Fingerprints").
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)

    def rabin(data: bytes) -> int:
        fp = empty
        for byte in data:
            fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
        return fp

    for entry in catalog().entries:
        expected = rabin(entry.canonical.encode()).to_bytes(8, "little")
        assert entry.fingerprint == expected, entry.name
    # And a vector from the Avro test suite: "null" -> 7195948357588979594.
    assert rabin(b'"null"') == 7195948357588979594


def test_history_files_are_self_contained_json() -> None:
    for entry in catalog().entries:
        assert entry.history, f"{entry.name} has no history"
        for writer in entry.history:
            path = AVRO_DIR / "history" / entry.name / f"v{writer.version}.avsc"
            assert json.loads(path.read_text()) == writer.source
