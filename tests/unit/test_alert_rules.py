"""Alert rules: promtool checks and unit tests, annotations, runbook links, metric names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.runtime.metrics import LifecycleMetrics
from agents.runtime.reconcile import ReconcileMetrics
from agents.runtime.replayer_metrics import ReplayerMetrics

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = PROM / "alerts_test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"

PROMTOOL = shutil.which("promtool")
# CI installs promtool (.ci/run), so there a missing promtool is a failure, not a skip.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool not on PATH (install: make tools, or apt-get install -y prometheus)",
)

REQUIRED_ALERTS = {
    "LifecycleRequestOverdue",
    "LifecycleRequestDueSoonNotProgressing",
    "LifecycleCommandsOutstandingTooLong",
    "LifecycleCommandEscalated",
    "LifecycleTimerLagHigh",
    "LifecycleDeadLetterRateHigh",
    "LifecycleItemsParked",
    "LifecycleConsumerLagGrowing",
    "LifecycleWorkerDown",
    "LifecycleNoWorkerRunning",
    "LifecycleAuditWriteFailing",
    "LifecycleProcessingWithoutConsent",
    "LifecycleReplayerUnreadable",
    "LifecycleRecordsOverdue",
    "LifecycleTimerStalled",
}

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "on", "without", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "rate", "irate", "increase", "delta", "deriv",
    "histogram_quantile", "offset", "bool", "le", "abs", "clamp_min", "time", "vector",
    "absent", "topk", "bottomk", "max_over_time", "min_over_time", "avg_over_time",
    "label_replace", "scalar", "sort", "sort_desc", "changes", "resets", "count_over_time",
}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    """Series names a scrape of the bundle can contain."""
    registry = CollectorRegistry()
    LifecycleMetrics.create(registry, version="t", policy_version="t")
    ReplayerMetrics.create(registry)
    ReconcileMetrics.create(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS}


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#+\s+(.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=PROM,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_config() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"],
        cwd=PROM,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist_with_annotations() -> None:
    rules = load_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert set(names) == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key), (rule["alert"], key)


def test_runbook_urls_point_at_runbook_sections() -> None:
    anchors = runbook_anchors()
    for rule in load_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.endswith("docs/runbook.md"), url
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"docs/runbook.md has no section {anchor!r}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == REQUIRED_ALERTS
    assert quiet == REQUIRED_ALERTS


def test_rules_use_only_exported_metrics() -> None:
    known = exported_names() | {"up"}
    for rule in load_rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, (rule["alert"], unknown)


def test_metric_name_parser_sees_names() -> None:
    expr = 'sum by (le) (rate(lifecycle_timer_lag_seconds_bucket{job="x"}[5m])) > on (a) up'
    assert metric_names(expr) == {"lifecycle_timer_lag_seconds_bucket", "up"}


def test_deployment_doc_lists_every_alert() -> None:
    doc = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert not [a for a in REQUIRED_ALERTS if f"`{a}`" not in doc]
