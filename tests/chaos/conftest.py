"""The chaos suite runs only when asked for (``-m chaos``, ``make chaos``): it starts its
own 3-node cluster and takes minutes, so a plain ``pytest tests`` skips it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="fault-injection suite: run `make chaos` or `pytest -m chaos`")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)
