"""Schema compatibility gate: FULL_TRANSITIVE over the recorded history.

Every current schema must be readable by every earlier version (forward) and
able to read every earlier version (backward). The check is structural and
follows the Avro specification's schema-resolution rules:

* records match by full name (or reader alias); a reader field missing from
  the writer needs a default; writer fields unknown to the reader are skipped;
* enums match by name; a writer symbol unknown to the reader needs a reader
  enum default;
* arrays/maps resolve their items/values; fixed types need name and size;
* primitives match or promote (int->long->float->double, string<->bytes);
* unions: every writer branch must resolve to some reader branch;
* a changed logicalType is reported too (the bytes resolve, the meaning not).

The current schema must also be recorded as the newest ``history/<Name>/vN.avsc``
so that its fingerprint stays decodable after the next change.

Run ``python -m streams.compat`` (the Makefile's ``make compat``); it prints
one problem per line and exits 1 if there is any.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.registry import AVRO_DIR, SchemaCatalog, SchemaCatalogError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
NAMED = ("record", "enum", "fixed")


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect(node: Any, namespace: str | None, names: dict[str, dict[str, Any]]) -> None:
    """Index every named type of a schema by full name."""
    if isinstance(node, list):
        for item in node:
            _collect(item, namespace, names)
    elif isinstance(node, dict):
        kind = node.get("type")
        ns = namespace
        if kind in NAMED:
            full = _full(str(node["name"]), node.get("namespace", namespace))
            ns = full.rsplit(".", 1)[0] if "." in full else None
            names[full] = {**node, "name": full}
        if kind == "record":
            for f in node.get("fields", []):
                _collect(f["type"], ns, names)
        elif kind == "array":
            _collect(node["items"], ns, names)
        elif kind == "map":
            _collect(node["values"], ns, names)
        elif isinstance(kind, dict | list):
            _collect(kind, ns, names)


class _Schema:
    """A schema with its named types, for resolving references."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.names: dict[str, dict[str, Any]] = {}
        namespace = root.get("namespace") if isinstance(root, dict) else None
        _collect(root, namespace, self.names)

    def deref(self, node: Any) -> Any:
        """Replace a named reference by its definition; unwrap {"type": <complex>}."""
        while True:
            if isinstance(node, str) and node not in PRIMITIVES:
                found = self.names.get(node)
                if found is None:  # unqualified reference: match by simple name
                    found = next(
                        (d for n, d in self.names.items() if n.rsplit(".", 1)[-1] == node), None
                    )
                if found is None:
                    return node
                node = found
            elif isinstance(node, dict) and isinstance(node.get("type"), dict | list):
                node = node["type"]
            else:
                return node


def _simple(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _same_name(w: dict[str, Any], r: dict[str, Any]) -> bool:
    """Avro matches named types by unqualified name, or by a reader alias."""
    accepted = {_simple(r["name"]), *(_simple(a) for a in r.get("aliases", []))}
    return _simple(w["name"]) in accepted


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    return str(node.get("type"))


def _logical(node: Any) -> str | None:
    return node.get("logicalType") if isinstance(node, dict) else None


def resolution_problems(writer_root: Any, reader_root: Any, *, path: str = "") -> list[str]:
    """Why data written with ``writer_root`` cannot be read with ``reader_root``."""
    return list(
        _resolve(_Schema(writer_root), writer_root, _Schema(reader_root), reader_root, path)
    )


def _resolve(ws: _Schema, w: Any, rs: _Schema, r: Any, path: str) -> Iterator[str]:
    w, r = ws.deref(w), rs.deref(r)
    wk, rk = _kind(w), _kind(r)
    where = path or "<root>"
    if wk == "union":
        # Each writer branch must resolve; against a reader union that means
        # matching one of its branches (handled by the case below).
        for branch in w:
            yield from _resolve(ws, branch, rs, r, f"{path}<{_kind(ws.deref(branch))}>")
        return
    if rk == "union":
        if not any(not list(_resolve(ws, w, rs, branch, path)) for branch in r):
            yield f"{where}: writer type {wk} matches no branch of the reader union"
        return
    if wk in PRIMITIVES or rk in PRIMITIVES:
        if wk != rk and rk not in PROMOTIONS.get(wk, frozenset()):
            yield f"{where}: writer type {wk} cannot be read as {rk}"
        elif _logical(w) != _logical(r):
            yield f"{where}: logical type changed from {_logical(w)} to {_logical(r)}"
        return
    if wk != rk:
        yield f"{where}: writer type {wk} cannot be read as {rk}"
        return
    if wk in NAMED and not _same_name(w, r):
        yield f"{where}: writer {wk} {w['name']} is not reader {wk} {r['name']}"
        return
    if wk == "record":
        writer_fields = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            candidates = [rf["name"], *rf.get("aliases", [])]
            wf = next((writer_fields[n] for n in candidates if n in writer_fields), None)
            field_path = f"{path}.{rf['name']}" if path else rf["name"]
            if wf is None:
                if "default" not in rf:
                    yield f"{field_path}: reader field has no default and the writer lacks it"
                continue
            yield from _resolve(ws, wf["type"], rs, rf["type"], field_path)
    elif wk == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            yield f"{where}: enum {r['name']} lacks writer symbol(s) {', '.join(missing)}"
    elif wk == "fixed":
        if w["size"] != r["size"]:
            yield f"{where}: fixed {r['name']} size {w['size']} != {r['size']}"
    elif wk == "array":
        yield from _resolve(ws, w["items"], rs, r["items"], f"{path}[]")
    elif wk == "map":
        yield from _resolve(ws, w["values"], rs, r["values"], f"{path}{{}}")


def full_compatibility_problems(old: Any, new: Any) -> list[str]:
    """FULL: new reads old (backward) and old reads new (forward)."""
    backward = [f"backward (new reads old): {p}" for p in resolution_problems(old, new)]
    forward = [f"forward (old reads new): {p}" for p in resolution_problems(new, old)]
    return backward + forward


def check_compatibility(avro_dir: Path = AVRO_DIR) -> list[str]:
    """Every problem with the schemas under ``avro_dir``; empty when all is well."""
    try:
        schemas = SchemaCatalog(avro_dir)
    except (SchemaCatalogError, OSError, ValueError) as exc:
        return [f"schemas do not load: {exc}"]
    problems: list[str] = []
    for entry in schemas.entries:
        if not entry.history:
            problems.append(f"{entry.name}: no history; record it as history/{entry.name}/v1.avsc")
        elif entry.history[-1].fingerprint != entry.fingerprint:
            problems.append(
                f"{entry.name}: current schema is not recorded; "
                f"add history/{entry.name}/v{entry.version}.avsc"
            )
        for old in entry.history:
            if old.fingerprint == entry.fingerprint:
                continue
            problems.extend(
                f"{entry.name} v{old.version} -> current: {p}"
                for p in full_compatibility_problems(old.source, entry.expanded)
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    avro_dir = Path(argv[0]) if argv else AVRO_DIR
    problems = check_compatibility(avro_dir)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"schemas compatible (FULL_TRANSITIVE) under {avro_dir}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
