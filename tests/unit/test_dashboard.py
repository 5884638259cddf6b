"""The Grafana dashboard queries only metrics the worker exports, and covers all of them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.runtime.metrics import METRIC_NAMES, LifecycleMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "lifecycle-dashboard.json"

PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "on", "without", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "rate", "irate", "increase", "delta", "deriv",
    "histogram_quantile", "offset", "bool", "abs", "clamp_min", "time", "vector", "absent",
    "topk", "bottomk", "max_over_time", "min_over_time", "avg_over_time", "label_replace",
    "scalar", "sort", "sort_desc", "changes", "resets", "count_over_time",
}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
BUILTIN_SERIES = {"up"}


def exported_series() -> dict[str, str]:
    """Series name -> the metric (as in METRIC_NAMES) it belongs to."""
    registry = CollectorRegistry()
    LifecycleMetrics.create(registry, version="t", policy_version="t")
    series: dict[str, str] = {}
    for family in registry.collect():
        if family.type == "counter":
            series[family.name + "_total"] = family.name + "_total"
        elif family.type == "histogram":
            series.update({family.name + s: family.name for s in HISTOGRAM_SUFFIXES})
        else:
            series[family.name] = family.name
    return series


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    words = set(re.findall(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return words - PROMQL_WORDS


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (p["title"], t["expr"])
        for p in all_panels(dash)
        if p["type"] != "row"
        for t in p.get("targets", [])
    ]


def test_parser_extracts_series_names() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (system, le) "
        '(rate(lifecycle_command_ack_latency_seconds_bucket{job=~"$job"}[$__rate_interval])))'
        " / on (system) up or vector(0)"
    )
    assert metric_names(expr) == {"lifecycle_command_ack_latency_seconds_bucket", "up"}


def test_every_query_names_only_exported_metrics() -> None:
    known = set(exported_series()) | BUILTIN_SERIES
    qs = queries(load())
    assert qs
    for title, expr in qs:
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= known, (title, names - known)


def test_every_exported_metric_is_on_the_dashboard() -> None:
    series = exported_series()
    used = {series[n] for _, expr in queries(load()) for n in metric_names(expr) if n in series}
    assert used == set(METRIC_NAMES)


@pytest.mark.parametrize(
    "topic",
    ["ingest", "ack", "latency", "requests", "timer", "consumer lag", "dead letter"],
)
def test_required_sections_are_present(topic: str) -> None:
    titles = " | ".join(p["title"].lower() for p in all_panels(load()))
    assert topic in titles


def test_panels_are_well_formed() -> None:
    dash = load()
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert dash["uid"]
    assert dash["title"]
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "job"}
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        assert 'job=~"$job"' in " ".join(t["expr"] for t in p["targets"]), p["title"]
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in all_panels(load()):
        g = p["gridPos"]
        for dx in range(g["w"]):
            for dy in range(g["h"]):
                cell = (g["x"] + dx, g["y"] + dy)
                assert cell not in cells, (p["title"], cells.get(cell))
                cells[cell] = p["title"]
