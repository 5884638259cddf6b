"""Right of access (N9, N11) and portability (N9), behind the identity gate (N12).

Access: ``AccessRequested`` opens the request ``awaiting_identity`` (see
``rights.py`` for the gate). Once identity is verified, one EXPORT command goes
to each system holding records of the subject for the request's controller
(record ids and categories in the command; rule ``N11.access``). When every
export is acknowledged the answer is ``completed`` with ``body_json`` the N11
access report (``agents.rights.report``) built from the policy and the state at
that moment: records with category, system, source, legal basis, purpose,
retention rule and deletion due date; purposes, legitimate interests,
recipients (the processor systems holding the records, N5), automated
decision-making (systems with ``automated_processing`` holding records, with
their logic), contacts of the controller, DPO and ICO, and the export
references collected. The report names records but does not copy their values:
the data travels through the export references. The HTML is rendered from the
body on demand (``lifecycle desk render``). With nothing held, the report is
sent at once. An escalated export makes the request ``failed`` (requests.py).

Portability: the same gate; EXPORT (rule ``N9.portability``) only to systems
holding records the subject provided (``provided_by_subject``). The acks'
exported records are kept in the request until all are in; then the answer is
``completed`` with ``body_json`` = ``{"kind": "portability", "json": <JSON
export>, "csv": <CSV export>}`` (``portability_export``) and the records are
dropped from the state. When that body would exceed the response's 500,000
characters, the body lists the export references instead
(``{"kind": "portability", "too_large": true, "exports": [...]}``) and the
reasons say so.
"""

from __future__ import annotations

import json

from agents.rights.report import (
    AutomatedDecision,
    ExportReference,
    HeldRecord,
    LegitimateInterest,
    Purpose,
    Recipient,
    ReportInputs,
    access_report_json,
    build_access_report,
    portability_export,
)
from agents.rules import requests, rights
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import RecordState, RequestState, replace
from schemas.base import LegalBasis, RequestType
from schemas.commands import Action
from schemas.events import AccessRequested, PortabilityRequested
from schemas.responses import ResponseStatus

# RequestResponse.body_json is LongText (at most 500,000 characters).
MAX_BODY = 500_000


def _open_gated(
    ctx: Ctx,
    event: AccessRequested | PortabilityRequested,
    request_type: RequestType,
    workflow: str,
    rule_id: str,
) -> None:
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.request_id,
        request_type=request_type,
        controller_id=event.controller_id,
        event_id=event.event_id,
        workflow=workflow,
        rule_id=rule_id,
        identity_required=True,
    )
    if request is not None:
        rights.gate(ctx, request, [n.evidence_id for n in request.evidence])


@handles(AccessRequested)
def on_access(ctx: Ctx, event: AccessRequested) -> None:
    _open_gated(ctx, event, RequestType.ACCESS, rights.ACCESS, rights.N11_ACCESS)


@handles(PortabilityRequested)
def on_portability(ctx: Ctx, event: PortabilityRequested) -> None:
    _open_gated(ctx, event, RequestType.PORTABILITY, rights.PORTABILITY, rights.N9_PORTABILITY)


def _start(ctx: Ctx, request: RequestState, *, portable_only: bool, rule_id: str) -> None:
    records = [r for r in rights.live_records(ctx) if r.provided_by_subject or not portable_only]
    groups = rights.group_by_system(ctx, request, records, rule_id)
    pending = rights.issue_per_system(ctx, request, groups, action=Action.EXPORT, rule_id=rule_id)
    ctx.audit(
        rule_id,
        "exports-requested",
        controller_id=request.controller_id,
        command_ids=pending,
        request_id=request.request_id,
        systems=list(groups),
        records=sum(len(k) for k in groups.values()),
    )
    rights.wait_or_complete(ctx, request, pending)


def _start_access(ctx: Ctx, request: RequestState) -> None:
    _start(ctx, request, portable_only=False, rule_id=rights.N11_ACCESS)


def _start_portability(ctx: Ctx, request: RequestState) -> None:
    _start(ctx, request, portable_only=True, rule_id=rights.N9_PORTABILITY)


def _retention_text(ctx: Ctx, record: RecordState) -> str:
    rule = next(
        (r for r in ctx.policy.rules_for(record.controller_id) if r.id == record.rule_id), None
    )
    if rule is not None:
        return rule.description
    return "Kept for as long as the retention policy below requires"


def report_inputs(ctx: Ctx, request: RequestState) -> ReportInputs:
    """The access report's inputs from the policy and the subject's state (N11)."""
    policy = ctx.policy
    records = [r for r in rights.live_records(ctx) if r.controller_id == request.controller_id]
    held = [
        HeldRecord(
            record_id=r.record_id,
            category=r.category,
            system=r.system,
            source=r.source,
            legal_basis=r.legal_basis,
            purpose=r.purpose,
            retention=_retention_text(ctx, r),
            delete_due=r.due_at,
        )
        for r in records
    ]
    purposes: dict[tuple[str, LegalBasis], Purpose] = {}
    interests: dict[str, LegitimateInterest] = {}
    for r in records:
        described = policy.purpose(r.purpose)
        purposes[(r.purpose, r.legal_basis)] = Purpose(
            purpose=r.purpose,
            description=described.description if described else r.purpose,
            legal_basis=r.legal_basis,
        )
        if (
            r.legal_basis is LegalBasis.LEGITIMATE_INTERESTS
            and described is not None
            and described.legitimate_interests
        ):
            interests[r.purpose] = LegitimateInterest(
                purpose=r.purpose, interest=described.legitimate_interests
            )
    systems = [s for s in policy.systems if any(r.system == s.id for r in records)]
    recipients = [
        Recipient(
            name=s.description,
            role="processor",
            system=s.id,
            region=s.region.value,
            safeguard=s.safeguard.value,
        )
        for s in systems
        if s.processor
    ]
    automated = [
        AutomatedDecision(
            name=s.description,
            logic=s.automated_logic or "not described",
            significance=(
                "You can object to this automated processing, including profiling, at any "
                "time; it then stops."
            ),
        )
        for s in systems
        if s.automated_processing
    ]
    controller, dpo, authority = rights.contacts(policy)
    return ReportInputs(
        request_id=request.request_id,
        subject_id=ctx.subject_id,
        controller_id=request.controller_id,
        generated_at=ctx.now,
        controller=controller,
        dpo=dpo,
        purposes=sorted(purposes.values(), key=lambda p: (p.purpose, p.legal_basis.value)),
        legitimate_interests=sorted(interests.values(), key=lambda i: i.purpose),
        records=held,
        recipients=recipients,
        complaint_authority=authority,
        automated_decisions=automated,
        exports=[
            ExportReference(system=e.system, export_reference=e.export_reference)
            for e in request.exports
            if e.export_reference
        ],
    )


def _complete_access(ctx: Ctx, request: RequestState) -> None:
    inputs = report_inputs(ctx, request)
    body = access_report_json(build_access_report(inputs))
    reasons: list[str] = []
    if len(body) > MAX_BODY:
        body = access_report_json(build_access_report(inputs.model_copy(update={"records": []})))
        reasons.append(
            f"You have {len(inputs.records)} records with us, too many to list in this answer; "
            "the categories are summarised and the data is available through the export "
            "references listed."
        )
    request = requests.respond(
        ctx, request, ResponseStatus.COMPLETED, reasons=reasons, body_json=body
    )
    ctx.audit(
        rights.N11_ACCESS,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        records=len(inputs.records),
        exports=len(inputs.exports),
    )


def _complete_portability(ctx: Ctx, request: RequestState) -> None:
    json_text, csv_text = portability_export((p.system, p.record) for p in request.portable)
    body = json.dumps(
        {"kind": "portability", "json": json_text, "csv": csv_text}, ensure_ascii=False
    )
    reasons: list[str] = []
    too_large = len(body) > MAX_BODY
    if too_large:
        body = json.dumps(
            {
                "kind": "portability",
                "too_large": True,
                "exports": [
                    {"system": e.system, "export_reference": e.export_reference}
                    for e in request.exports
                ],
            }
        )
        reasons.append(
            "Your data is too large to include in this answer; it is available from each "
            "system under the export references listed."
        )
    records = len({(p.system, p.record.record_id) for p in request.portable})
    # The exported values leave the state with this answer.
    request = replace(request, portable=[])
    request = requests.respond(
        ctx, request, ResponseStatus.COMPLETED, reasons=reasons, body_json=body
    )
    ctx.audit(
        rights.N9_PORTABILITY,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        records=records,
        too_large=too_large,
    )


rights.register_starter(rights.ACCESS, _start_access)
rights.register_starter(rights.PORTABILITY, _start_portability)
requests.register_completer(rights.ACCESS, _complete_access)
requests.register_completer(rights.PORTABILITY, _complete_portability)
