"""Policy settings and topic declarations for erasure replay and own topics that forget
(N9.erasure-replay, N9.erasure-own-topics)."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import agents
from agents.rules.policy import PolicyError, load_policy, parse_policy
from streams.settings import Settings
from streams.topics import HOUR_MS, TopicNames, TopicRetention, declared_topics

POLICY_DIR = Path(agents.__file__).parent / "policy"
NOTICE = load_policy(POLICY_DIR / "notice.yaml")
DOC: dict[str, Any] = yaml.safe_load((POLICY_DIR / "notice.yaml").read_text())
DAY = timedelta(days=1)


def test_the_shipped_policy_traces_both_settings_to_their_rules() -> None:
    assert NOTICE.backups.rule == "N9.erasure-replay"
    assert NOTICE.backups.longest_retention.as_timedelta() == timedelta(days=35)
    assert NOTICE.own_topics.rule == "N9.erasure-own-topics"
    # Hours, not months.
    assert NOTICE.own_topics.personal_data_kept_for.as_timedelta() == timedelta(hours=72)
    demo = load_policy(POLICY_DIR / "demo.yaml")
    assert demo.own_topics.personal_data_kept_for.as_timedelta() < timedelta(hours=1)


@pytest.mark.parametrize(
    ("section", "name", "value", "message"),
    [
        ("backups", "longest_retention", "P1M", "fixed length"),
        ("own_topics", "personal_data_kept_for", "P1Y", "fixed length"),
        ("own_topics", "personal_data_kept_for", "PT0S", "longer than zero"),
        ("own_topics", "segment_for", "PT0S", "longer than zero"),
    ],
)
def test_bounds_must_be_fixed_and_positive(
    section: str, name: str, value: str, message: str
) -> None:
    doc = copy.deepcopy(DOC)
    doc[section][name] = value
    with pytest.raises(PolicyError, match=message) as info:
        parse_policy(doc, "notice.yaml")
    assert f"{section}.{name}" in str(info.value)


def _specs(retention: TopicRetention) -> dict[str, dict[str, str]]:
    settings = Settings(topic_prefix="p", partitions=3)
    return {s.name: s.config for s in declared_topics(settings, ["crm"], retention)}


def test_topics_that_can_hold_personal_data_keep_it_within_the_policy_bound() -> None:
    retention = NOTICE.topic_retention()
    assert retention == TopicRetention(
        personal_ms=72 * HOUR_MS, segment_ms=HOUR_MS, ledger_ms=35 * 24 * HOUR_MS
    )
    specs = _specs(retention)
    names = TopicNames("p")
    personal = [*names.inputs, names.acks, names.responses, names.dead_letter, names.command("crm")]
    for name in personal:
        assert specs[name]["retention.ms"] == str(72 * HOUR_MS), name
        assert specs[name]["segment.ms"] == str(HOUR_MS), name
        assert specs[name]["cleanup.policy"] == "delete", name
    assert int(specs[names.ticks]["retention.ms"]) <= 24 * HOUR_MS
    # Every topic is accounted for: personal-data bound, ticks, audit, ledger, restores.
    assert set(specs) == {
        *personal,
        names.ticks,
        names.audit,
        names.erasure_ledger,
        names.erasure_replays,
        names.restores,
    }


def test_the_ledger_is_kept_as_long_as_the_longest_backup_and_seeks_by_broker_time() -> None:
    specs = _specs(NOTICE.topic_retention())
    ledger = specs[TopicNames("p").erasure_ledger]
    assert ledger == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(35 * 24 * HOUR_MS),
        "message.timestamp.type": "LogAppendTime",
    }


def test_a_short_bound_also_shortens_ticks() -> None:
    specs = _specs(TopicRetention(personal_ms=10_000, segment_ms=1_000, ledger_ms=60_000))
    assert specs[TopicNames("p").ticks]["retention.ms"] == "10000"
