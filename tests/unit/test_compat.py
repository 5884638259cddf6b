"""The compatibility gate passes on the tree and reports incompatible changes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from schemas.deadletter import DeadLetter
from schemas.registry import AVRO_DIR, SchemaCatalog, parse_record_schema
from streams.compat import (
    check_compatibility,
    full_compatibility_problems,
    main,
    resolution_problems,
)


def record(*fields: dict[str, Any], name: str = "ns.R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "ns.E", "symbols": list(symbols), **extra}


A = {"name": "a", "type": "string"}


def test_the_tree_is_compatible(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_compatibility() == []
    assert main([]) == 0
    assert "compatible" in capsys.readouterr().out


def test_dead_letter_has_a_real_evolution() -> None:
    entry = SchemaCatalog().entry(DeadLetter)
    assert [w.version for w in entry.history] == [1, 2, 3]
    assert entry.version == 3
    for old in entry.history:
        assert full_compatibility_problems(old.source, entry.expanded) == []


def test_reason_class_cannot_grow_but_failure_class_can() -> None:
    # Why parked items have their own enum: v1 and v2 readers have no enum
    # default, so a new ReasonClass symbol would be unreadable to them.
    current = SchemaCatalog().entry(DeadLetter).expanded
    grown = json.loads(json.dumps(current))
    reason = next(f for f in grown["fields"] if f["name"] == "reason_class")
    reason["type"]["symbols"].append("unknown_topic")
    assert any(
        "lacks writer symbol(s) unknown_topic" in p
        for p in full_compatibility_problems(current, grown)
    )
    grown = json.loads(json.dumps(current))
    failure = next(f for f in grown["fields"] if f["name"] == "failure_class")
    failure["type"][1]["symbols"].append("a_later_class")
    assert full_compatibility_problems(current, grown) == []


def test_adding_an_optional_field_with_default_is_full_compatible() -> None:
    new = record(A, {"name": "b", "type": ["null", "long"], "default": None})
    assert full_compatibility_problems(record(A), new) == []


def test_adding_a_required_field_is_not_backward_compatible() -> None:
    problems = full_compatibility_problems(record(A), record(A, {"name": "b", "type": "long"}))
    assert problems == [
        "backward (new reads old): b: reader field has no default and the writer lacks it"
    ]


def test_removing_a_required_field_is_not_forward_compatible() -> None:
    problems = full_compatibility_problems(record(A, {"name": "b", "type": "long"}), record(A))
    assert problems == [
        "forward (old reads new): b: reader field has no default and the writer lacks it"
    ]


def test_enum_symbol_changes() -> None:
    old = record({"name": "e", "type": enum("x", "y")})
    removed = record({"name": "e", "type": enum("x")})
    added = record({"name": "e", "type": enum("x", "y", "z")})
    added_with_default = record({"name": "e", "type": enum("x", "y", "z", default="x")})
    assert any(
        p.startswith("backward") and "lacks writer symbol(s) y" in p
        for p in full_compatibility_problems(old, removed)
    )
    assert any(
        p.startswith("forward") and "lacks writer symbol(s) z" in p
        for p in full_compatibility_problems(old, added)
    )
    # With an enum default on both sides, an added symbol reads as the default.
    assert (
        full_compatibility_problems(
            record({"name": "e", "type": enum("x", "y", default="x")}), added_with_default
        )
        == []
    )


def test_promotions_are_one_way() -> None:
    old = record({"name": "n", "type": "int"})
    new = record({"name": "n", "type": "long"})
    assert resolution_problems(old, new) == []
    assert resolution_problems(new, old) == ["n: writer type long cannot be read as int"]
    assert (
        resolution_problems(
            record({"name": "s", "type": "string"}), record({"name": "s", "type": "bytes"})
        )
        == []
    )


def test_unions_and_type_changes() -> None:
    optional = record({"name": "o", "type": ["null", "string"], "default": None})
    required = record({"name": "o", "type": "string"})
    # string -> [null, string] resolves; the reverse fails for the null branch.
    assert resolution_problems(required, optional) == []
    assert resolution_problems(optional, required) == [
        "o<null>: writer type null cannot be read as string"
    ]
    assert resolution_problems(required, record({"name": "o", "type": "long"})) == [
        "o: writer type string cannot be read as long"
    ]


def test_logical_type_change_is_reported() -> None:
    millis = record({"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}})
    micros = record({"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}})
    assert resolution_problems(millis, micros) == [
        "t: logical type changed from timestamp-millis to timestamp-micros"
    ]


def test_nested_records_and_renames() -> None:
    inner = {"type": "record", "name": "ns.I", "fields": [A]}
    old = record({"name": "items", "type": {"type": "array", "items": inner}})
    inner2 = {"type": "record", "name": "ns.I", "fields": [A, {"name": "z", "type": "int"}]}
    new = record({"name": "items", "type": {"type": "array", "items": inner2}})
    assert resolution_problems(old, new) == [
        "items[].z: reader field has no default and the writer lacks it"
    ]
    renamed = record(A, name="ns.Other")
    assert resolution_problems(record(A), renamed) == [
        "<root>: writer record ns.R is not reader record ns.Other"
    ]
    aliased = {**renamed, "aliases": ["R"]}
    assert resolution_problems(record(A), aliased) == []


@pytest.mark.parametrize(
    ("old", "new", "compatible"),
    [
        (record(A), record(A, {"name": "b", "type": "long", "default": 7}), True),
        (record(A), record(A, {"name": "b", "type": "long"}), False),
        (record({"name": "n", "type": "int"}), record({"name": "n", "type": "long"}), True),
    ],
)
def test_structural_check_agrees_with_fastavro_for_backward(
    old: dict[str, Any], new: dict[str, Any], compatible: bool
) -> None:
    """Cross-check against fastavro's own resolution: write old, read with new."""
    writer, reader = parse_record_schema(old), parse_record_schema(new)
    datum = {"a": "x", "n": 5}
    buffer = io.BytesIO()
    schemaless_writer(buffer, writer, datum)
    buffer.seek(0)
    if compatible:
        schemaless_reader(buffer, writer, reader)
    else:
        with pytest.raises(Exception, match="default"):
            schemaless_reader(buffer, writer, reader)
    assert (resolution_problems(old, new) == []) is compatible


# -- the gate over a tree ------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(AVRO_DIR, tmp_path / "avro")
    return tmp_path / "avro"


def _edit(path: Path, change: Any) -> None:
    source = json.loads(path.read_text())
    change(source)
    path.write_text(json.dumps(source))


def test_unrecorded_change_is_reported(tree: Path) -> None:
    _edit(
        tree / "events" / "CallRecorded.avsc",
        lambda s: s["fields"].append({"name": "note", "type": ["null", "string"], "default": None}),
    )
    assert check_compatibility(tree) == [
        "CallRecorded: current schema is not recorded; add history/CallRecorded/v2.avsc"
    ]


def test_required_field_without_default_is_reported(tree: Path) -> None:
    _edit(
        tree / "events" / "CallRecorded.avsc",
        lambda s: s["fields"].append({"name": "note", "type": "string", "doc": "x"}),
    )
    problems = check_compatibility(tree)
    assert (
        "CallRecorded v1 -> current: backward (new reads old): "
        "note: reader field has no default and the writer lacks it" in problems
    )


def test_removed_enum_symbol_is_reported_through_a_nested_record(tree: Path) -> None:
    def drop_symbol(source: dict[str, Any]) -> None:
        category = next(f for f in source["fields"] if f["name"] == "category")
        category["type"]["symbols"].remove("billing")

    _edit(tree / "responses" / "KeptItem.avsc", drop_symbol)
    problems = check_compatibility(tree)
    assert any(
        p.startswith("KeptItem v1 -> current: backward") and "billing" in p for p in problems
    )
    assert any(
        p.startswith("RequestResponse v1 -> current: backward")
        and "kept[].category" in p
        and "billing" in p
        for p in problems
    )


def test_history_gap_is_reported(tree: Path) -> None:
    history = tree / "history" / "DueTick"
    newest = len(list(history.glob("v*.avsc")))
    shutil.copy(history / f"v{newest}.avsc", history / f"v{newest + 2}.avsc")
    problems = check_compatibility(tree)
    assert len(problems) == 1
    assert "v1..vN without gaps" in problems[0]


def test_cli_exit_code(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(
        tree / "internal" / "DueTick.avsc",
        lambda s: s["fields"].append({"name": "x", "type": "long", "doc": "x"}),
    )
    assert main([str(tree)]) == 1
    assert "DueTick" in capsys.readouterr().out
