"""Stored values: JSON with a format version, upgraded when read, or unreadable.

Every stored model has a field ``v`` (its format version, default = current).
``decode`` takes the fast path when the bytes validate as the current version;
otherwise it reads the JSON, applies the registered upgrades from the stored
version up to the current one and validates the result. A value that is not
JSON, has no upgrade path, is newer than this code, or still does not validate
raises ``UnreadableState``: the caller quarantines it (``docs/state.md``), it
is never silently dropped or guessed at.

Internal state is written and read only by this pipeline; public messages
(events, commands, responses, audit) keep their Avro contracts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]

_UPGRADES: dict[tuple[type[BaseModel], int], Upgrade] = {}


class UnreadableState(Exception):
    """A stored value this code cannot read. ``reason`` never quotes the value."""

    def __init__(self, key: bytes, raw: bytes, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.raw = raw
        self.reason = reason


def current_version(model: type[BaseModel]) -> int:
    default = model.model_fields["v"].default
    assert isinstance(default, int)
    return default


def register_upgrade(model: type[BaseModel], from_version: int, upgrade: Upgrade) -> None:
    """``upgrade`` turns a stored ``model`` dict of ``from_version`` into the next version
    (it must set ``v``). Upgrades chain up to the current version."""
    key = (model, from_version)
    if key in _UPGRADES:
        raise ValueError(f"{model.__name__} already has an upgrade from version {from_version}")
    _UPGRADES[key] = upgrade


def unregister_upgrade(model: type[BaseModel], from_version: int) -> None:
    _UPGRADES.pop((model, from_version), None)


def encode(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model)


def decode(model: type[M], key: bytes, raw: bytes) -> M:
    current = current_version(model)
    try:
        value = model.model_validate_json(raw)
        if getattr(value, "v", None) == current:
            return value
    except ValidationError:
        pass
    return _slow_decode(model, key, raw, current)


def _slow_decode(model: type[M], key: bytes, raw: bytes, current: int) -> M:
    try:
        data = json.loads(raw)
    except ValueError:
        raise UnreadableState(key, raw, f"{model.__name__}: not JSON") from None
    if not isinstance(data, dict):
        raise UnreadableState(key, raw, f"{model.__name__}: not a JSON object")
    version = data.get("v")
    if not isinstance(version, int):
        raise UnreadableState(key, raw, f"{model.__name__}: no format version")
    if version > current:
        raise UnreadableState(
            key, raw, f"{model.__name__}: format version {version} is newer than {current}"
        )
    while version < current:
        upgrade = _UPGRADES.get((model, version))
        if upgrade is None:
            raise UnreadableState(
                key, raw, f"{model.__name__}: no upgrade from format version {version}"
            )
        data = upgrade(data)
        next_version = data.get("v")
        if not isinstance(next_version, int) or next_version <= version:
            raise UnreadableState(
                key, raw, f"{model.__name__}: upgrade from {version} did not advance"
            )
        version = next_version
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "(value)"
        raise UnreadableState(
            key, raw, f"{model.__name__} v{version}: invalid at {where}"
        ) from None
