"""Access report (N11), portability export (N9) and refusal text (N10)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from markupsafe import escape

from agents.rights.report import (
    AccessReport,
    AutomatedDecision,
    ContactDetails,
    ExportReference,
    HeldRecord,
    LegitimateInterest,
    Purpose,
    Recipient,
    ReportInputs,
    access_report_json,
    build_access_report,
    portability_export,
    refusal_text,
    render_access_report_html,
)
from schemas.base import DataCategory, DataSource, LegalBasis, RequestType
from schemas.commands import ExportedRecord
from schemas.responses import KeptItem

GENERATED = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)


def full_inputs(**overrides: Any) -> ReportInputs:
    values: dict[str, Any] = {
        "request_id": "req-42",
        "subject_id": "cust-7",
        "controller_id": "smartcomms",
        "generated_at": GENERATED,
        "dpo": ContactDetails(name="Dana Officer", email="dpo@smart-numbers.example"),
        "purposes": [
            Purpose(
                purpose="billing",
                description="Invoicing your numbers",
                legal_basis=LegalBasis.CONTRACT,
            ),
            Purpose(
                purpose="marketing",
                description="Telling you about our services",
                legal_basis=LegalBasis.LEGITIMATE_INTERESTS,
            ),
        ],
        "legitimate_interests": [
            LegitimateInterest(purpose="marketing", interest="Promoting our telecoms services"),
        ],
        "records": [
            HeldRecord(
                record_id="inv-1",
                category=DataCategory.BILLING,
                system="billing-db",
                source=DataSource.SUBJECT,
                legal_basis=LegalBasis.LEGAL_OBLIGATION,
                purpose="billing",
                retention="Seven years after the contract ends",
                delete_due=datetime(2031, 5, 1, 22, 59, 59, 999_000, tzinfo=UTC),
            ),
            HeldRecord(
                record_id="cra-1",
                category=DataCategory.CREDIT_REFERENCE,
                system="crm",
                source=DataSource.CREDIT_REFERENCE_AGENCY,
                source_detail="Example Credit Bureau",
                legal_basis=LegalBasis.LEGITIMATE_INTERESTS,
                retention="Until the contract ends",
            ),
        ],
        "recipients": [
            Recipient(
                name="Acme Mailing Ltd", system="marketing-platform", region="UK", safeguard=None
            ),
        ],
        "automated_decisions": [
            AutomatedDecision(
                name="Lead scoring",
                logic="Website visits are counted to rank sales enquiries",
                significance="Decides the order in which sales staff call back",
            ),
        ],
        "exports": [ExportReference(system="billing-db", export_reference="exp-2024-0001")],
    }
    values.update(overrides)
    return ReportInputs(**values)


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.DOTALL)
    assert match, f"section {section_id} missing"
    return match.group(1)


# Every item the notice says an access request returns: (JSON key, HTML
# section id, text that must appear in both). Legal bases are codes in JSON and
# labels in HTML, so they have their own table below.
N11_ITEMS = [
    ("controller", "controller", "privacy@smart-numbers.net"),
    ("controller", "controller", "1-2 The Exchange, Beaulieu Road, Southampton SO45 4PX"),
    ("dpo", "dpo", "dpo@smart-numbers.example"),
    ("purposes", "purposes", "Invoicing your numbers"),
    ("legitimate_interests", "legitimate-interests", "Promoting our telecoms services"),
    ("categories", "categories", "Billing details"),
    ("categories", "categories", "Information from credit reference agencies"),
    ("records", "records", "inv-1"),
    ("records", "records", "billing-db"),
    ("records", "records", "Seven years after the contract ends"),
    ("records", "records", "2031-05-01"),
    ("recipients", "recipients", "Acme Mailing Ltd"),
    ("retention_policy", "retention", "seven years after the contract ends"),
    ("rights", "rights", "Right of access"),
    ("rights", "rights", "Right of rectification"),
    ("rights", "rights", "Right to be forgotten"),
    ("rights", "rights", "Right to restriction of processing"),
    ("rights", "rights", "Right of portability"),
    ("rights", "rights", "Right to object: you can object"),
    ("rights", "rights", "Right to object to automated processing, including profiling"),
    ("withdraw_consent", "withdraw-consent", "withdraw that consent at any time"),
    ("complaint_authority", "complaints", "Wycliffe House, Water Lane, Wilmslow, SK9 5AF"),
    ("complaint_authority", "complaints", "+44 (0) 303 123 1113"),
    ("complaint_statement", "complaints", "within 30 days"),
    ("statutory_requirement", "statutory", "not a statutory requirement"),
    ("statutory_requirement", "statutory", "contractual requirement"),
    ("sources", "sources", "Example Credit Bureau"),
    ("sources", "sources", "Credit reference agencies"),
    ("automated_decisions", "automated", "Website visits are counted to rank sales enquiries"),
    ("automated_decisions", "automated", "Decides the order in which sales staff call back"),
    ("exports", "exports", "exp-2024-0001"),
]


@pytest.mark.parametrize(("json_key", "section_id", "text"), N11_ITEMS)
def test_every_n11_item_is_in_json_and_html(json_key: str, section_id: str, text: str) -> None:
    report = build_access_report(full_inputs())
    body = json.loads(access_report_json(report))
    assert text in json.dumps(body[json_key], ensure_ascii=False)
    assert str(escape(text)) in section(render_access_report_html(report), section_id)


@pytest.mark.parametrize(
    ("basis", "label"),
    [
        ("contract", "Performance of a contract or service"),
        ("legitimate_interests", "Legitimate interests"),
    ],
)
def test_legal_basis_of_each_purpose(basis: str, label: str) -> None:
    report = build_access_report(full_inputs())
    assert basis in [p["legal_basis"] for p in json.loads(access_report_json(report))["purposes"]]
    assert f"<td>{label}</td>" in section(render_access_report_html(report), "purposes")


@pytest.mark.parametrize(
    ("overrides", "json_key", "section_id", "text"),
    [
        ({"dpo": None}, "dpo_statement", "dpo", "has not appointed a data protection officer"),
        ({"automated_decisions": []}, "automated_statement", "automated", "No automated"),
        ({"recipients": []}, "recipients_statement", "recipients", "documented instructions"),
    ],
)
def test_items_without_data_are_answered_not_omitted(
    overrides: dict[str, Any], json_key: str, section_id: str, text: str
) -> None:
    report = build_access_report(full_inputs(**overrides))
    assert text in json.loads(access_report_json(report))[json_key]
    assert text in section(render_access_report_html(report), section_id)


def test_sources_list_only_data_not_collected_from_the_subject() -> None:
    report = build_access_report(full_inputs())
    assert [(s.category, s.source) for s in report.sources] == [
        (DataCategory.CREDIT_REFERENCE, DataSource.CREDIT_REFERENCE_AGENCY)
    ]


def test_json_round_trips() -> None:
    report = build_access_report(full_inputs())
    assert AccessReport.model_validate_json(access_report_json(report)) == report


PAYLOAD = '<script>alert("x")</script><b onmouseover=1>'


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            {"controller": ContactDetails(name=PAYLOAD, email="a@b.example")}, id="controller"
        ),
        pytest.param({"dpo": ContactDetails(name=PAYLOAD)}, id="dpo"),
        pytest.param({"recipients": [Recipient(name=PAYLOAD)]}, id="recipient"),
        pytest.param(
            {
                "purposes": [
                    Purpose(purpose="x", description=PAYLOAD, legal_basis=LegalBasis.CONSENT)
                ]
            },
            id="purpose",
        ),
        pytest.param(
            {
                "legitimate_interests": [
                    LegitimateInterest(purpose="x", interest="i", party=PAYLOAD)
                ]
            },
            id="legitimate-interest-party",
        ),
        pytest.param(
            {
                "records": [
                    HeldRecord(
                        record_id="r1",
                        category=DataCategory.PURCHASED_LIST,
                        system="crm",
                        source=DataSource.LIST_BROKER,
                        source_detail=PAYLOAD,
                        retention="r",
                    )
                ]
            },
            id="source-detail",
        ),
        pytest.param(
            {"automated_decisions": [AutomatedDecision(name="n", logic=PAYLOAD, significance="s")]},
            id="automated-logic",
        ),
        pytest.param(
            {"exports": [ExportReference(system="crm", export_reference=PAYLOAD)]}, id="export"
        ),
    ],
)
def test_html_escapes_injected_markup(overrides: dict[str, Any]) -> None:
    html = render_access_report_html(build_access_report(full_inputs(**overrides)))
    assert "<script" not in html
    assert "<b onmouseover" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def exported(record_id: str, provided: bool, **fields: str) -> ExportedRecord:
    return ExportedRecord(
        record_id=record_id,
        category=DataCategory.FORMS_SURVEYS,
        provided_by_subject=provided,
        fields=fields,
    )


def test_portability_exports_only_what_the_subject_provided() -> None:
    json_text, csv_text = portability_export(
        [
            ("crm", exported("f-2", True, company="Ünïcode Ltd", phone="0345")),
            ("crm", exported("obs-1", False, ip="192.0.2.1")),
            ("web-forms", exported("f-1", True, answer="yes")),
            ("crm", exported("f-2", True, company="Ünïcode Ltd", phone="0345")),  # redelivered
        ]
    )
    body = json.loads(json_text)
    assert body["format"] == "smartcomms-portability/1"
    assert body["records"] == [
        {
            "system": "crm",
            "record_id": "f-2",
            "category": "forms_surveys",
            "fields": {"company": "Ünïcode Ltd", "phone": "0345"},
        },
        {
            "system": "web-forms",
            "record_id": "f-1",
            "category": "forms_surveys",
            "fields": {"answer": "yes"},
        },
    ]
    assert list(csv.reader(io.StringIO(csv_text))) == [
        ["system", "record_id", "category", "field", "value"],
        ["crm", "f-2", "forms_surveys", "company", "Ünïcode Ltd"],
        ["crm", "f-2", "forms_surveys", "phone", "0345"],
        ["web-forms", "f-1", "forms_surveys", "answer", "yes"],
    ]


@pytest.mark.parametrize(
    ("value", "in_csv"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+44 345 0178 179", "'+44 345 0178 179"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("plain, with comma", "plain, with comma"),
        ('quote " inside', 'quote " inside'),
    ],
)
def test_portability_csv_neutralises_formulas_json_keeps_value(value: str, in_csv: str) -> None:
    json_text, csv_text = portability_export([("crm", exported("f-1", True, note=value))])
    assert json.loads(json_text)["records"][0]["fields"]["note"] == value
    assert list(csv.reader(io.StringIO(csv_text)))[1][4] == in_csv


KEPT = KeptItem(
    record_id="inv-1",
    system="billing-db",
    category=DataCategory.BILLING,
    reason="kept for seven years after the contract ends to meet a legal obligation",
)


@pytest.mark.parametrize(
    ("request_type", "partial", "reasons", "kept", "expected"),
    [
        (
            RequestType.ERASURE,
            True,
            [],
            [KEPT],
            ["erasure request", "refused in part", KEPT.reason, "Billing details", "billing-db"],
        ),
        (
            RequestType.ACCESS,
            False,
            ["the request is manifestly unfounded"],
            [],
            ["access request", "refused in full", "the request is manifestly unfounded"],
        ),
        (
            RequestType.PORTABILITY,
            True,
            ["call recordings are not data you provided", "second reason"],
            [KEPT],
            ["portability request", "call recordings are not data you provided", "second reason"],
        ),
    ],
)
def test_refusal_states_reasons_and_right_to_complain(
    request_type: RequestType,
    partial: bool,
    reasons: list[str],
    kept: list[KeptItem],
    expected: list[str],
) -> None:
    text = refusal_text(
        request_type=request_type, request_id="req-9", reasons=reasons, kept=kept, partial=partial
    )
    for needle in [
        *expected,
        "req-9",
        "complain",
        "Information Commissioner's Office (ICO)",
        "Wycliffe House, Water Lane, Wilmslow, SK9 5AF",
        "courts",
        "privacy@smart-numbers.net",
    ]:
        assert needle in text


@pytest.mark.parametrize("reasons", [[], ["  "]])
def test_refusal_without_a_reason_is_refused(reasons: list[str]) -> None:
    with pytest.raises(ValueError, match="reason"):
        refusal_text(request_type=RequestType.ERASURE, request_id="req-9", reasons=reasons)
