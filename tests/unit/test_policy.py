import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import agents
from agents.rules.durations import Duration
from agents.rules.policy import ConsentEnforcement, PolicyError, RuleKind, load_policy, parse_policy
from schemas.base import DataCategory
from streams.topics import PRODUCING_SYSTEMS

POLICY_DIR = Path(agents.__file__).parent / "policy"
NOTICE = POLICY_DIR / "notice.yaml"
DEMO = POLICY_DIR / "demo.yaml"
DOC: dict[str, Any] = yaml.safe_load(NOTICE.read_text())

Mutation = Callable[[dict[str, Any]], None]


def _system(doc: dict[str, Any], system_id: str) -> dict[str, Any]:
    return next(s for s in doc["systems"] if s["id"] == system_id)


def _rule(doc: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in doc["retention"] if r["id"] == rule_id)


def test_notice_policy_is_faithful_to_the_notice() -> None:
    p = load_policy(NOTICE)
    assert p.controller.email == "privacy@smart-numbers.net"
    assert "Wycliffe House" in (p.ico.address or "")
    assert p.rule_for("smartcomms", RuleKind.FIXED, DataCategory.CALL_RECORDING) is not None
    rules = {r.id: r for r in p.retention}
    assert rules["N7.call-recordings"].keep_for == Duration.parse("P30D")
    assert rules["N6.legal-obligation"].keep_for == Duration.parse("P7Y")
    assert rules["N6.contract-end"].keep_for == Duration.parse("P0D")
    assert {s.id for s in p.marketing_systems} == {"marketing-platform"}
    assert p.purpose(p.recording_purpose) is not None
    assert not p.purpose(p.recording_purpose).marketing  # type: ignore[union-attr]
    legal = {c for c, cp in p.categories.items() if cp.legal_obligation}
    assert {DataCategory.BILLING, DataCategory.TRANSACTIONS, DataCategory.CONTRACT} <= legal
    assert DataCategory.CALL_RECORDING not in legal
    # Bookkeeping has an end (docs/state.md).
    assert p.state.dedup_window == Duration.parse("P7D")
    assert p.state.finished_requests_kept_for == Duration.parse("P30D")
    # N9: answers wait for every system that publishes the subjects' data (not the
    # desk, which publishes the requests); N4: withdrawn consent binds.
    assert set(p.event_time.sources) == set(PRODUCING_SYSTEMS) - {"privacy-desk"}
    assert p.event_time.contract_sources == ["billing"]
    assert p.consent.after_withdrawal is ConsentEnforcement.STOP_PROCESSING


def test_demo_policy_has_same_rules_compressed() -> None:
    notice, demo = load_policy(NOTICE), load_policy(DEMO)
    assert [r.id for r in demo.retention] == [r.id for r in notice.retention]
    assert [s.id for s in demo.systems] == [s.id for s in notice.systems]
    by_id = {r.id: r.keep_for for r in demo.retention}
    assert by_id["N7.call-recordings"] == Duration.parse("PT20S")
    assert by_id["N6.legal-obligation"] == Duration.parse("PT60S")
    assert demo.version != notice.version
    assert (demo.systems, demo.purposes, demo.categories) == (
        notice.systems,
        notice.purposes,
        notice.categories,
    )
    override = demo.rule_for("demo-client", RuleKind.FIXED, DataCategory.CALL_RECORDING)
    assert override is not None
    assert override.keep_for == Duration.parse("PT60S")


def _n8_us_without_safeguard(doc: dict[str, Any]) -> None:
    _system(doc, "intl-numbers-processor")["safeguard"] = "none"


def _unknown_category_in_system(doc: dict[str, Any]) -> None:
    _system(doc, "crm")["categories"].append("shoe_size")


def _bad_duration(doc: dict[str, Any]) -> None:
    _rule(doc, "N7.call-recordings")["keep_for"] = "30 days"


def _unknown_rule_ref(doc: dict[str, Any]) -> None:
    doc["controllers"] = [
        {
            "id": "acme",
            "name": "Acme",
            "retention_overrides": [{"rule": "N7.recordings", "keep_for": "P90D"}],
        }
    ]


def _missing_category(doc: dict[str, Any]) -> None:
    del doc["categories"]["billing"]


def _recording_purpose_marketing(doc: dict[str, Any]) -> None:
    doc["recording_purpose"] = "sales-marketing"


def _li_without_interests(doc: dict[str, Any]) -> None:
    del doc["purposes"][0]["legitimate_interests"]


def _two_default_rules(doc: dict[str, Any]) -> None:
    doc["retention"].append(
        {"id": "N1.other", "kind": "default", "keep_for": "P1Y", "description": "x"}
    )


def _calendar_ack_deadline(doc: dict[str, Any]) -> None:
    doc["commands"]["ack_deadline"] = "P1M"


def _marketing_system_with_recordings(doc: dict[str, Any]) -> None:
    _system(doc, "marketing-platform")["categories"].append("call_recording")


def _duplicate_system(doc: dict[str, Any]) -> None:
    doc["systems"].append(copy.deepcopy(_system(doc, "crm")))


def _missing_version(doc: dict[str, Any]) -> None:
    del doc["version"]


def _calendar_dedup_window(doc: dict[str, Any]) -> None:
    doc["state"]["dedup_window"] = "P1M"


def _zero_request_retention(doc: dict[str, Any]) -> None:
    doc["state"]["finished_requests_kept_for"] = "PT0S"


def _calendar_max_wait(doc: dict[str, Any]) -> None:
    doc["event_time"]["max_wait"] = "P1M"


def _source_twice(doc: dict[str, Any]) -> None:
    doc["event_time"]["sources"].append("crm")


def _contract_source_without_watermark(doc: dict[str, Any]) -> None:
    doc["event_time"]["contract_sources"] = ["billing", "privacy-desk"]


def _unknown_consent_enforcement(doc: dict[str, Any]) -> None:
    doc["consent"]["after_withdrawal"] = "ignore"


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (_calendar_max_wait, "event_time.max_wait", "fixed length"),
        (_source_twice, "event_time.sources", "listed twice"),
        (_contract_source_without_watermark, "event_time", "not in event_time.sources"),
        (_unknown_consent_enforcement, "consent.after_withdrawal", "Input should be"),
        (
            _n8_us_without_safeguard,
            "systems[7] (intl-numbers-processor).safeguard",
            "outside the UK/EEA without a transfer safeguard",
        ),
        (_unknown_category_in_system, "systems[3].categories[6]", "Input should be"),
        (_bad_duration, "retention[0].keep_for", "invalid duration '30 days'"),
        (
            _unknown_rule_ref,
            "controllers[0] (acme).retention_overrides[0].rule",
            "unknown rule 'N7.recordings'",
        ),
        (_missing_category, "categories", "categories not described: billing"),
        (_recording_purpose_marketing, "recording_purpose", "(N14)"),
        (_li_without_interests, "purposes[0] (sales-marketing).legitimate_interests", "required"),
        (_two_default_rules, "retention", "exactly one rule of kind default, found 2"),
        (_calendar_ack_deadline, "commands.ack_deadline", "fixed length"),
        (_calendar_dedup_window, "state.dedup_window", "fixed length"),
        (_zero_request_retention, "state.finished_requests_kept_for", "longer than zero"),
        (_marketing_system_with_recordings, "systems[4] (marketing-platform).categories", "(N14)"),
        (_duplicate_system, "systems[8] (crm).id", "duplicate system id"),
        (_missing_version, "version", "Field required"),
    ],
)
def test_invalid_policy_is_refused_with_path_and_reason(
    mutate: Mutation, path: str, message: str
) -> None:
    doc = copy.deepcopy(DOC)
    mutate(doc)
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, "notice.yaml")
    text = str(info.value)
    assert f"notice.yaml: {path}: " in text
    assert message in text


def test_n8_allows_safeguarded_transfer_and_uk_eea_without() -> None:
    doc = copy.deepcopy(DOC)
    _system(doc, "intl-numbers-processor")["safeguard"] = "idta"
    _system(doc, "web-analytics")["safeguard"] = "none"  # EEA needs none
    assert parse_policy(doc).system("intl-numbers-processor") is not None


def test_n8_system_holding_no_personal_data_needs_no_safeguard() -> None:
    doc = copy.deepcopy(DOC)
    doc["systems"].append(
        {
            "id": "status-page",
            "description": "Public status page",
            "categories": [],
            "region": "us",
            "safeguard": "none",
        }
    )
    assert parse_policy(doc).system("status-page") is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("version: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "the document must be a mapping"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(path)
    assert str(info.value).startswith(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


def test_policy_is_frozen() -> None:
    p = load_policy(NOTICE)
    with pytest.raises(ValueError, match="frozen"):
        p.version = "x"  # type: ignore[misc]
