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
dropped from the state. When that body would exceed ``MAX_BODY`` bytes (or
there are more than ``limits.MAX_PORTABLE_RECORDS`` records), the body lists
the export references instead (``{"kind": "portability", "too_large": true,
"exports": [...]}``) and the reasons say so.

Exports go out a page of records at a time (one EXPORT per system and page).
The report's summaries (purposes, interests, recipients, automated decisions)
come from the subject's record tally, so they cost the same whatever it holds;
records are listed by name up to ``limits.MAX_REPORT_RECORDS``, beyond which
the answer says they are too many to list.
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
from agents.rules import jobs, limits, requests, rights
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import (
    ITEM_EXPORT,
    ITEM_PORTABLE,
    ExportNote,
    Job,
    PortableRecord,
    RecordState,
    RequestState,
)
from agents.store.codec import decode
from schemas.base import LegalBasis, RequestType
from schemas.commands import Action
from schemas.events import AccessRequested, PortabilityRequested
from schemas.responses import ResponseStatus

# RequestResponse.body_json is LongText (at most 500,000 characters); the body is
# kept under this many bytes so every response stays well under the broker's limit.
MAX_BODY = 300_000
# Records read to list them in an access report (the listing stops there).
_REPORT_SCAN = 5 * limits.MAX_REPORT_RECORDS
EXPORTS = "exports"


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


@jobs.step(EXPORTS)
def _export_page(ctx: Ctx, job: Job) -> Job | None:
    request = ctx.subject.requests.get(job.ref)
    if request is None or request.final:
        return None
    portable_only = request.workflow == rights.PORTABILITY
    rule_id = rights.N9_PORTABILITY if portable_only else rights.N11_ACCESS
    page, last = jobs.page(ctx, job)
    records = [r for r in page if r.provided_by_subject or not portable_only]
    groups, noted = rights.group_by_system(ctx, request, records, rule_id, job)
    pending = rights.issue_per_system(ctx, request, groups, action=Action.EXPORT, rule_id=rule_id)
    ctx.audit(
        rule_id,
        "exports-requested",
        controller_id=request.controller_id,
        command_ids=pending,
        request_id=request.request_id,
        systems=list(groups),
        records=sum(len(k) for k in groups.values()),
        **rights.page_suffix(job, last),
    )
    if not last:
        return jobs.advance(noted or job, page)
    rights.wait_or_complete(ctx, request.request_id)
    return None


def _start(ctx: Ctx, request: RequestState) -> None:
    jobs.start(ctx, EXPORTS, request.request_id)


def _retention_text(ctx: Ctx, record: RecordState) -> str:
    rule = next(
        (r for r in ctx.policy.rules_for(record.controller_id) if r.id == record.rule_id), None
    )
    if rule is not None:
        return rule.description
    return "Kept for as long as the retention policy below requires"


def _held(ctx: Ctx, controller_id: str, count: int) -> list[RecordState] | None:
    """The controller's records (for listing), or None when too many to list."""
    if count > limits.MAX_REPORT_RECORDS:
        return None
    found = ctx.records.scan(limit=_REPORT_SCAN + 1)
    if len(found) > _REPORT_SCAN:
        return None
    return [r for r in found if r.controller_id == controller_id]


def report_inputs(ctx: Ctx, request: RequestState) -> tuple[ReportInputs, int]:
    """The access report's inputs from the policy and the subject's state (N11), and
    how many records the controller holds (listed in the inputs when not too many)."""
    policy = ctx.policy
    mine: list[tuple[str, str, str, str]] = []  # (system, category, purpose, basis)
    count = 0
    for key, n in ctx.subject.tally.items():
        owner, system_id, category, purpose_id, basis_value = key.split("|")
        if owner == request.controller_id:
            mine.append((system_id, category, purpose_id, basis_value))
            count += n
    listed = _held(ctx, request.controller_id, count) or []
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
        for r in listed
    ]
    purposes: dict[tuple[str, LegalBasis], Purpose] = {}
    interests: dict[str, LegitimateInterest] = {}
    for _system, _category, purpose_id, basis_value in mine:
        basis = LegalBasis(basis_value)
        described = policy.purpose(purpose_id)
        purposes[(purpose_id, basis)] = Purpose(
            purpose=purpose_id,
            description=described.description if described else purpose_id,
            legal_basis=basis,
        )
        if (
            basis is LegalBasis.LEGITIMATE_INTERESTS
            and described is not None
            and described.legitimate_interests
        ):
            interests[purpose_id] = LegitimateInterest(
                purpose=purpose_id, interest=described.legitimate_interests
            )
    held_systems = {held_system for held_system, _, _, _ in mine}
    systems = [s for s in policy.systems if s.id in held_systems]
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
    exports = [
        decode(ExportNote, key.encode(), raw)
        for key, raw in ctx.items(request.request_id, ITEM_EXPORT, limit=limits.MAX_EXPORTS_LISTED)
    ]
    inputs = ReportInputs(
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
            for e in exports
            if e.export_reference
        ],
    )
    return inputs, count


def _complete_access(ctx: Ctx, request: RequestState) -> None:
    inputs, count = report_inputs(ctx, request)
    body = access_report_json(build_access_report(inputs))
    reasons: list[str] = []
    if len(inputs.records) < count or len(body.encode()) > MAX_BODY:
        body = access_report_json(build_access_report(inputs.model_copy(update={"records": []})))
        reasons.append(
            f"You have {count} records with us, too many to list in this answer; "
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
        records=count,
        exports=len(inputs.exports),
    )


def _complete_portability(ctx: Ctx, request: RequestState) -> None:
    found = ctx.items(request.request_id, ITEM_PORTABLE, limit=limits.MAX_PORTABLE_RECORDS + 1)
    portable = [decode(PortableRecord, key.encode(), raw) for key, raw in found]
    body = ""
    too_large = len(portable) > limits.MAX_PORTABLE_RECORDS
    if not too_large:
        json_text, csv_text = portability_export((p.system, p.record) for p in portable)
        body = json.dumps(
            {"kind": "portability", "json": json_text, "csv": csv_text}, ensure_ascii=False
        )
        too_large = len(body.encode()) > MAX_BODY
    reasons: list[str] = []
    if too_large:
        exports = [
            decode(ExportNote, key.encode(), raw)
            for key, raw in ctx.items(
                request.request_id, ITEM_EXPORT, limit=limits.MAX_EXPORTS_LISTED
            )
        ]
        body = json.dumps(
            {
                "kind": "portability",
                "too_large": True,
                "exports": [
                    {"system": e.system, "export_reference": e.export_reference} for e in exports
                ],
            }
        )
        reasons.append(
            "Your data is too large to include in this answer; it is available from each "
            "system under the export references listed."
        )
    records = len({(p.system, p.record.record_id) for p in portable})
    # The exported values leave the state with this answer (the rest a page at a time).
    jobs.start(ctx, DROP_PORTABLE, request.request_id)
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


DROP_PORTABLE = "drop-portable"


@jobs.step(DROP_PORTABLE)
def _drop_portable(ctx: Ctx, job: Job) -> Job | None:
    limit = max(1, min(limits.PAGE, ctx.budget))
    found = ctx.items(job.ref, ITEM_PORTABLE, limit=limit + 1)
    for name, _ in found[:limit]:
        ctx.item_delete(job.ref, ITEM_PORTABLE, name)
    ctx.budget -= len(found[:limit])
    return None if len(found) <= limit else job


rights.register_starter(rights.ACCESS, _start)
rights.register_starter(rights.PORTABILITY, _start)
requests.register_completer(rights.ACCESS, _complete_access)
requests.register_completer(rights.PORTABILITY, _complete_portability)
