"""Hypothesis strategies that build valid instances of every message model.

Derived from the models' own annotations and constraints (patterns, lengths,
bounds), so a new field is covered without editing this file. Other test
modules import ``model_strategy``, ``any_model`` and ``NOW``.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.base import Frozen
from schemas.registry import MODELS

# The injected clock of the tests: generated times are never after it.
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_MIN_TIME = datetime(1990, 1, 1)
_MAX_TIME = datetime(2026, 6, 1, 12, 0)
_MAX_COLLECTION = 4
# Property tests run on loaded CI machines: no per-example deadline and no
# timing-based health checks (the suite has no timed assertions).
PROPERTY = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _constraint(metadata: list[Any], name: str) -> Any:
    for item in metadata:
        value = getattr(item, name, None)
        if value is not None:
            return value
    return None


def _strategy(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _strategy(args[0], [*metadata, *annotation.__metadata__])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1
        return st.none() | _strategy(inner[0], metadata)
    min_len = _constraint(metadata, "min_length") or 0
    max_len = _constraint(metadata, "max_length")
    if origin is list:
        return st.lists(
            _strategy(args[0], []),
            min_size=min_len,
            max_size=max(min_len, min(max_len or _MAX_COLLECTION, _MAX_COLLECTION)),
        )
    if origin is dict:
        return st.dictionaries(
            _strategy(args[0], []),
            _strategy(args[1], []),
            min_size=min_len,
            max_size=max(min_len, min(max_len or _MAX_COLLECTION, _MAX_COLLECTION)),
        )
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return st.sampled_from(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    if annotation is str:
        pattern = _constraint(metadata, "pattern")
        if pattern is not None:
            return st.from_regex(pattern, fullmatch=True)
        return st.text(min_size=max(min_len, 1) if min_len else 0, max_size=min(max_len or 40, 40))
    if annotation is bytes:
        return st.binary(max_size=64)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = _constraint(metadata, "ge")
        high = _constraint(metadata, "le")
        return st.integers(
            min_value=low if low is not None else -(2**40),
            max_value=high if high is not None else 2**40,
        )
    if annotation is datetime:
        return st.datetimes(min_value=_MIN_TIME, max_value=_MAX_TIME, timezones=st.just(UTC))
    if annotation is date:
        return st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 12, 31))
    raise TypeError(f"no strategy for {annotation!r}")


@cache
def model_strategy(model: type[Frozen]) -> st.SearchStrategy[Frozen]:
    """Valid instances of ``model`` (validated against NOW, like the decoder does)."""
    fields = {
        name: _strategy(info.annotation, list(info.metadata))
        for name, info in model.model_fields.items()
    }
    return st.fixed_dictionaries(fields).map(
        lambda data: model.model_validate(data, context={"now": NOW})
    )


def any_model() -> st.SearchStrategy[Frozen]:
    return st.one_of([model_strategy(m) for m in MODELS])


@settings(PROPERTY, max_examples=200)
@given(any_model())
def test_generated_models_are_valid(model: Frozen) -> None:
    # Re-validating the dump proves the strategies produce valid messages.
    again = type(model).model_validate(model.model_dump(), context={"now": NOW})
    assert again == model
