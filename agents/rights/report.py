"""What the subject receives: access report (N11), portability export (N9) and
refusal text (N10).

The lead fills :class:`ReportInputs` from the loaded policy and the subject's
state; :func:`build_access_report` turns it into an :class:`AccessReport`
whose fields are the notice's list, one for one. The report is rendered to
HTML (jinja2, autoescaped) for the subject and to JSON for
``RequestResponse.body_json``.

Decisions:

* The report names records (id, category, system, source, basis, retention,
  deletion due) and the exports collected (system, export reference) but does
  not copy the exported field values: the data itself travels through the
  export reference, so the responses topic never becomes a second copy of it.
* Contacts default to the notice's own: SmartComms (attention of the Head of
  Customer Success) and the ICO at Wycliffe House. The notice appoints no DPO
  by name; when ``dpo`` is None the report says so and points to the
  controller's privacy contact, so the item is answered rather than omitted.
* With no automated decision-making in the inputs the report says that none is
  recorded for the subject, rather than leaving the item out.
* Portability (N9) covers only records the subject provided
  (``provided_by_subject``). JSON keeps values exactly; CSV is long form
  (system, record_id, category, field, value) and prefixes a value starting
  with ``= + - @`` or a tab/CR with an apostrophe so that a spreadsheet does
  not run it as a formula (OWASP CSV injection); the JSON is the faithful copy.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import jinja2
from pydantic import Field

from agents.rights.deadlines import uk_date
from schemas.base import (
    DataCategory,
    DataSource,
    Frozen,
    Identifier,
    LegalBasis,
    LongText,
    RequestType,
    ShortText,
    Slug,
    UtcDatetime,
)
from schemas.commands import ExportedRecord
from schemas.responses import KeptItem

__all__ = [
    "CATEGORY_LABELS",
    "DEFAULT_RETENTION_POLICY",
    "DEFAULT_STATUTORY_REQUIREMENT",
    "ICO_CONTACT",
    "LEGAL_BASIS_LABELS",
    "NOTICE_RIGHTS",
    "SMARTCOMMS_CONTACT",
    "SOURCE_LABELS",
    "WITHDRAW_CONSENT",
    "AccessReport",
    "AutomatedDecision",
    "CategoryEntry",
    "ContactDetails",
    "ExportReference",
    "HeldRecord",
    "LegitimateInterest",
    "Purpose",
    "Recipient",
    "ReportInputs",
    "SourceEntry",
    "access_report_json",
    "build_access_report",
    "portability_export",
    "refusal_text",
    "render_access_report_html",
]

PORTABILITY_FORMAT = "smartcomms-portability/1"


class ContactDetails(Frozen):
    name: ShortText
    attention: ShortText | None = None
    address: ShortText | None = None
    phone: ShortText | None = None
    email: ShortText | None = None
    web: ShortText | None = None


SMARTCOMMS_CONTACT = ContactDetails(
    name="SmartComms® Limited",
    attention="Head of Customer Success",
    address="1-2 The Exchange, Beaulieu Road, Southampton SO45 4PX",
    phone="+44 (0) 345 0178 179",
    email="privacy@smart-numbers.net",
)
ICO_CONTACT = ContactDetails(
    name="Information Commissioner's Office (ICO)",
    address="Wycliffe House, Water Lane, Wilmslow, SK9 5AF",
    phone="+44 (0) 303 123 1113",
    web="https://ico.org.uk/global/contact-us/email/",
)
NOTICE_RIGHTS: tuple[str, ...] = (
    "Right of access: you can ask for a copy of the information we hold about you.",
    "Right of rectification: you can have inaccurate or incomplete data corrected.",
    "Right to be forgotten: in certain circumstances you can ask for your data to be erased.",
    "Right to restriction of processing: where certain conditions apply you can have "
    "processing restricted.",
    "Right of portability: you can have the data you provided to us transferred to another "
    "organisation.",
    "Right to object: you can object to certain processing, such as direct marketing.",
    "Right to object to automated processing, including profiling: you have the right not to "
    "be subject to the legal effects of automated processing or profiling.",
)
WITHDRAW_CONSENT = (
    "Where we process your data on the basis of your consent, you can withdraw that consent "
    "at any time by contacting us; the processing that relied on it then stops. Withdrawal "
    "does not affect processing carried out before it."
)
DEFAULT_RETENTION_POLICY = (
    "We process personal data for the duration of any contract and keep only the data needed "
    "to meet legal obligations for seven years after the contract ends. Call recordings are "
    "kept for 30 days and then deleted, unless needed longer for contractual or legal "
    "purposes. Marketing data is kept until you opt out."
)
DEFAULT_STATUTORY_REQUIREMENT = (
    "Providing personal data to us is not a statutory requirement. Contact, billing and "
    "transaction details are a contractual requirement and are needed to enter into and "
    "perform a contract with us: without them we cannot provide our services. You are not "
    "obliged to provide any data for marketing, and not providing it has no consequence for "
    "the services you receive."
)

LEGAL_BASIS_LABELS: dict[LegalBasis, str] = {
    LegalBasis.LEGITIMATE_INTERESTS: "Legitimate interests",
    LegalBasis.CONTRACT: "Performance of a contract or service",
    LegalBasis.LEGAL_OBLIGATION: "Compliance with a legal obligation",
    LegalBasis.CONSENT: "Consent",
}
CATEGORY_LABELS: dict[DataCategory, str] = {
    DataCategory.FORMS_SURVEYS: "Forms and surveys you completed",
    DataCategory.CORRESPONDENCE: "Records of our correspondence",
    DataCategory.CALL_RECORDING: "Recordings of telephone calls",
    DataCategory.CALL_RECORDS: "Records of telephone calls",
    DataCategory.WEBSITE_VISITS: "Website visits, including IP addresses",
    DataCategory.WEB_BEHAVIOUR_STATS: "Statistics about behaviour on our website",
    DataCategory.TRANSACTIONS: "Transaction information",
    DataCategory.CONTRACT: "Contract details",
    DataCategory.BILLING: "Billing details",
    DataCategory.THIRD_PARTY_PUBLIC: "Information from public sources",
    DataCategory.CREDIT_REFERENCE: "Information from credit reference agencies",
    DataCategory.PURCHASED_LIST: "Data purchased from a UK list broker on a client's behalf",
    DataCategory.MARKETING_PROFILE: "Marketing preferences and history",
    DataCategory.IDENTITY_DOCUMENTS: "Identity documents you sent us",
}
SOURCE_LABELS: dict[DataSource, str] = {
    DataSource.SUBJECT: "Provided by you",
    DataSource.OBSERVED: "Observed from your use of our services and website",
    DataSource.PUBLIC_SOURCE: "Public sources",
    DataSource.SUPPLIER: "Our suppliers",
    DataSource.CREDIT_REFERENCE_AGENCY: "Credit reference agencies",
    DataSource.LIST_BROKER: "A third-party UK list broker (purchased on behalf of a client)",
    DataSource.CLIENT: "One of our clients, for whom we process data",
}
REQUEST_LABELS: dict[RequestType, str] = {
    RequestType.ACCESS: "access",
    RequestType.ERASURE: "erasure",
    RequestType.RECTIFICATION: "rectification",
    RequestType.RESTRICTION: "restriction of processing",
    RequestType.PORTABILITY: "portability",
    RequestType.OBJECTION: "objection",
    RequestType.COMPLAINT: "complaint",
}


class Purpose(Frozen):
    purpose: Slug
    description: ShortText
    legal_basis: LegalBasis


class LegitimateInterest(Frozen):
    purpose: Slug
    interest: ShortText
    # Whose interest: SmartComms or a third party such as one of its clients.
    party: ShortText = "SmartComms®"


class HeldRecord(Frozen):
    record_id: Identifier
    category: DataCategory
    system: Slug
    source: DataSource
    source_detail: ShortText | None = None
    legal_basis: LegalBasis | None = None
    purpose: Slug | None = None
    retention: ShortText
    delete_due: UtcDatetime | None = None


class Recipient(Frozen):
    name: ShortText
    role: ShortText = "processor"
    system: Slug | None = None
    region: ShortText | None = None
    safeguard: ShortText | None = None


class AutomatedDecision(Frozen):
    name: ShortText
    logic: ShortText
    significance: ShortText


class ExportReference(Frozen):
    system: Slug
    export_reference: ShortText


class ReportInputs(Frozen):
    """Everything an access report is built from; plain data, no behaviour."""

    request_id: Identifier
    subject_id: Identifier
    controller_id: Slug
    generated_at: UtcDatetime
    controller: ContactDetails = SMARTCOMMS_CONTACT
    dpo: ContactDetails | None = None
    purposes: list[Purpose] = Field(default_factory=list)
    legitimate_interests: list[LegitimateInterest] = Field(default_factory=list)
    records: list[HeldRecord] = Field(default_factory=list)
    recipients: list[Recipient] = Field(default_factory=list)
    retention_policy: LongText = DEFAULT_RETENTION_POLICY
    rights: list[ShortText] = Field(default_factory=lambda: list(NOTICE_RIGHTS))
    withdraw_consent: LongText = WITHDRAW_CONSENT
    complaint_authority: ContactDetails = ICO_CONTACT
    statutory_requirement: LongText = DEFAULT_STATUTORY_REQUIREMENT
    automated_decisions: list[AutomatedDecision] = Field(default_factory=list)
    exports: list[ExportReference] = Field(default_factory=list)


class CategoryEntry(Frozen):
    category: DataCategory
    description: ShortText
    systems: list[Slug]
    record_count: int


class SourceEntry(Frozen):
    category: DataCategory
    source: DataSource
    description: ShortText
    detail: ShortText | None = None


class AccessReport(Frozen):
    """The access report body, one field per item the notice lists (N11)."""

    report_version: Literal[1] = 1
    request_id: Identifier
    subject_id: Identifier
    controller_id: Slug
    generated_at: UtcDatetime
    controller: ContactDetails
    dpo: ContactDetails | None
    dpo_statement: LongText
    purposes: list[Purpose]
    legitimate_interests: list[LegitimateInterest]
    categories: list[CategoryEntry]
    records: list[HeldRecord]
    sources: list[SourceEntry]
    recipients: list[Recipient]
    recipients_statement: LongText
    retention_policy: LongText
    rights: list[ShortText]
    withdraw_consent: LongText
    complaint_controller: ContactDetails
    complaint_authority: ContactDetails
    complaint_statement: LongText
    statutory_requirement: LongText
    automated_decisions: list[AutomatedDecision]
    automated_statement: LongText
    exports: list[ExportReference]


def build_access_report(inputs: ReportInputs) -> AccessReport:
    """Assemble the N11 report from plain inputs; deterministic for equal inputs."""
    records = sorted(inputs.records, key=lambda r: (r.category.value, r.system, r.record_id))
    by_category: dict[DataCategory, list[HeldRecord]] = {}
    for record in records:
        by_category.setdefault(record.category, []).append(record)
    categories = [
        CategoryEntry(
            category=category,
            description=CATEGORY_LABELS[category],
            systems=sorted({r.system for r in held}),
            record_count=len(held),
        )
        for category, held in by_category.items()
    ]
    sources = sorted(
        {
            SourceEntry(
                category=r.category,
                source=r.source,
                description=SOURCE_LABELS[r.source],
                detail=r.source_detail,
            )
            for r in records
            if r.source is not DataSource.SUBJECT
        },
        key=lambda s: (s.category.value, s.source.value, s.detail or ""),
    )
    if inputs.dpo is None:
        dpo_statement = (
            f"{inputs.controller.name} has not appointed a data protection officer. "
            "Questions about your data go to the privacy contact above."
        )
    else:
        dpo_statement = f"Our data protection officer is {inputs.dpo.name}."
    controller_name = inputs.controller.name
    complaint_statement = (
        f"You have the right to complain to {controller_name} about how your personal data is "
        f"processed. If you do not get a response within 30 days, or you are not satisfied, "
        f"you can complain to the supervisory authority, the "
        f"{inputs.complaint_authority.name}."
    )
    recipients_statement = (
        "We pass personal data only to third parties processing it on our behalf under our "
        "documented instructions (listed here), and where required by law to regulators, "
        "government and statutory bodies."
    )
    if inputs.automated_decisions:
        automated_statement = (
            "The following automated decision-making, including profiling, applies to your data."
        )
    else:
        automated_statement = (
            "No automated decision-making, including profiling, is recorded for your data."
        )
    return AccessReport(
        request_id=inputs.request_id,
        subject_id=inputs.subject_id,
        controller_id=inputs.controller_id,
        generated_at=inputs.generated_at,
        controller=inputs.controller,
        dpo=inputs.dpo,
        dpo_statement=dpo_statement,
        purposes=sorted(inputs.purposes, key=lambda p: (p.purpose, p.legal_basis.value)),
        legitimate_interests=list(inputs.legitimate_interests),
        categories=categories,
        records=records,
        sources=sources,
        recipients=sorted(inputs.recipients, key=lambda r: (r.name, r.system or "")),
        recipients_statement=recipients_statement,
        retention_policy=inputs.retention_policy,
        rights=list(inputs.rights),
        withdraw_consent=inputs.withdraw_consent,
        complaint_controller=inputs.controller,
        complaint_authority=inputs.complaint_authority,
        complaint_statement=complaint_statement,
        statutory_requirement=inputs.statutory_requirement,
        automated_decisions=list(inputs.automated_decisions),
        automated_statement=automated_statement,
        exports=sorted(inputs.exports, key=lambda e: (e.system, e.export_reference)),
    )


def access_report_json(report: AccessReport) -> str:
    """The report as JSON text, for ``RequestResponse.body_json``."""
    return report.model_dump_json()


def _uk_day(value: datetime | None) -> str:
    return "" if value is None else uk_date(value).isoformat()


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["uk_day"] = _uk_day
_ENV.globals.update(
    basis_label=LEGAL_BASIS_LABELS.__getitem__,
    category_label=CATEGORY_LABELS.__getitem__,
    source_label=SOURCE_LABELS.__getitem__,
)


def render_access_report_html(report: AccessReport) -> str:
    """The report as an HTML page for the subject; every value is escaped."""
    return _ENV.get_template("access_report.html.j2").render(report=report)


def _csv_safe(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def portability_export(records: Iterable[tuple[str, ExportedRecord]]) -> tuple[str, str]:
    """(json_text, csv_text) of the data the subject provided, from (system, record) pairs.

    Records not provided by the subject are left out (portability covers data
    the subject provided). A record delivered twice appears once (last wins).
    """
    chosen: dict[tuple[str, str], ExportedRecord] = {}
    for system, record in records:
        if record.provided_by_subject:
            chosen[(system, record.record_id)] = record
    ordered = sorted(chosen.items())
    rows = [
        {
            "system": system,
            "record_id": record_id,
            "category": record.category.value,
            "fields": dict(sorted(record.fields.items())),
        }
        for (system, record_id), record in ordered
    ]
    json_text = json.dumps(
        {"format": PORTABILITY_FORMAT, "records": rows}, ensure_ascii=False, indent=2
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["system", "record_id", "category", "field", "value"])
    for (system, record_id), record in ordered:
        for name, value in sorted(record.fields.items()):
            writer.writerow([system, record_id, record.category.value, name, _csv_safe(value)])
    return json_text, buffer.getvalue()


def _contact_lines(contact: ContactDetails) -> list[str]:
    lines = [contact.name]
    if contact.attention:
        lines.append(f"For the attention of the {contact.attention}")
    for label, value in (
        ("Address", contact.address),
        ("Telephone", contact.phone),
        ("Email", contact.email),
        ("Online", contact.web),
    ):
        if value:
            lines.append(f"{label}: {value}")
    return lines


def refusal_text(
    *,
    request_type: RequestType,
    request_id: str,
    reasons: Sequence[str],
    kept: Sequence[KeptItem] = (),
    partial: bool = False,
    controller: ContactDetails = SMARTCOMMS_CONTACT,
    authority: ContactDetails = ICO_CONTACT,
) -> str:
    """Plain-text answer refusing a request wholly or in part, with reasons (N10).

    Always states every reason (a refusal without one is a programming error:
    ``ValueError``) and the right to complain to the ICO and to challenge the
    decision in court.
    """
    reason_lines = [r.strip() for r in reasons if r.strip()]
    reason_lines += [
        f"{CATEGORY_LABELS[k.category]} held in {k.system} (record {k.record_id}): {k.reason}"
        for k in kept
    ]
    if not reason_lines:
        raise ValueError("a refusal must state at least one reason (N10)")
    label = REQUEST_LABELS[request_type]
    extent = "in part" if partial else "in full"
    lines = [
        f"Your {label} request (reference {request_id}) has been refused {extent}.",
        "",
        "The reasons are:",
        *(f"  - {line}" for line in reason_lines),
        "",
        "You have the right to challenge this decision. You can complain to the supervisory "
        "authority:",
        *(f"  {line}" for line in _contact_lines(authority)),
        "You can also seek to enforce your rights through the courts.",
        "",
        "If you have questions about this decision, please contact us:",
        *(f"  {line}" for line in _contact_lines(controller)),
    ]
    return "\n".join(lines) + "\n"
