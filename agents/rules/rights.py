"""Shared machinery of the data-subject rights workflows (N9, N10, N12, N13).

* **Identity gate (N12).** Access and portability requests are opened
  ``awaiting_identity`` (``identity_required``). Each ``IdentityEvidenceReceived``
  for the request id is noted (kind and dates only, ``EvidenceNote``) and the
  evidence is judged with ``agents.rights.identity.evaluate_identity``. Until it
  passes, every judgement sends an ``awaiting_identity`` response listing what
  is missing (``missing_evidence``) and why any document was rejected
  (``reasons``; audit ``identity-evidence-rejected`` with the reason). When it
  passes, the deadline clock starts at that event's time (``requests.start_clock``,
  audit ``identity-verified``) and the workflow's starter runs (e.g. EXPORT
  commands). Evidence that arrives before its request is held in a placeholder
  entry (``RequestState.placeholder``), used when the request arrives and
  discarded one period later if it never does. Evidence after verification or
  after the request closed is audited and ignored. At most ``MAX_EVIDENCE``
  documents are noted per request.
* **Extension (N13).** ``RequestExtended`` adds one or two further months (two
  in total at most), only when decided before the due date (the event's time,
  not when it is processed: N13) and once the clock runs: new due
  date, ``in_progress`` response saying why and until when, audit
  ``request-extended``; otherwise audit ``extension-refused`` with the reason.
* **Refusal (N10).** ``RequestRefused`` answers ``refused`` with the reason and
  the right to complain to the ICO; ``body_json`` carries the full letter
  (``refusal_text``) as ``{"kind": "refusal", "text": ...}``. Commands already
  sent for the request are not recalled (they still close normally).
* **Complaints (N13).** ``ComplaintReceived`` opens a request of type
  ``complaint`` due 30 days after receipt, acknowledged ``in_progress`` with the
  due date and the route to the ICO. ``ComplaintAnswered`` closes it
  ``completed`` with the answer and, again, the route to the ICO; until then it
  stays open and goes overdue visibly.
* **Exports.** ``note_ack`` runs before an ack is applied: for an EXPORT sent for
  a request it keeps the ``export_reference`` and, for portability only, the
  exported records the subject provided (dropped again once answered), as
  request items.
* **Paging.** Workflows that concern the subject's records (access, portability,
  restriction, rectification, objection to profiling) go through them a page at
  a time (``agents.rules.jobs``): each page sends its commands and audits them;
  the answer comes with the last page.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from agents.rights.deadlines import uk_date
from agents.rights.identity import EvidenceItem, evaluate_identity
from agents.rights.report import ContactDetails, refusal_text
from agents.rules import ids, requests
from agents.rules.context import Ctx
from agents.rules.policy import Policy
from agents.rules.registry import handles
from agents.rules.state import (
    ITEM_EXPORT,
    ITEM_PORTABLE,
    MAX_EVIDENCE,
    EvidenceNote,
    ExportNote,
    Job,
    PortableRecord,
    RecordState,
    RequestState,
    replace,
)
from agents.store.codec import encode
from schemas.base import RequestType
from schemas.commands import AckOutcome, Action, CommandAck
from schemas.events import (
    ComplaintAnswered,
    ComplaintReceived,
    IdentityEvidenceReceived,
    RequestExtended,
    RequestRefused,
)
from schemas.responses import ResponseStatus

N4_CONSENT = "N4.consent"
N9_PORTABILITY = "N9.portability"
N9_RECTIFICATION = "N9.rectification"
N9_RESTRICTION = "N9.restriction"
N9_RESTRICTION_LIFTED = "N9.restriction-lifted"
N9_OBJECTION_PROFILING = "N9.objection-automated-processing"
N10_REFUSAL = "N10.refusal"
N11_ACCESS = "N11.access"
N12_IDENTITY = "N12.identity"
N13_EXTENSION = "N13.extension"
N13_COMPLAINT = "N13.complaint"

# Workflow names (RequestState.workflow).
ACCESS = "access"
PORTABILITY = "portability"
RECTIFICATION = "rectification"
RESTRICTION = "restriction"
OBJECTION_PROFILING = "objection-profiling"
COMPLAINT = "complaint"

MAX_EXTENSION_MONTHS = 2
_SHORT = 1000
_MAX_REASONS = 100

Starter = Callable[[Ctx, RequestState], None]
_STARTERS: dict[str, Starter] = {}


def register_starter(workflow: str, starter: Starter) -> None:
    """``starter`` runs when a gated request of ``workflow`` has its identity verified."""
    if workflow in _STARTERS:
        raise ValueError(f"workflow {workflow!r} already has a starter")
    _STARTERS[workflow] = starter


def short(text: str) -> str:
    """Fit ``text`` into a ShortText field."""
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def contacts(policy: Policy) -> tuple[ContactDetails, ContactDetails, ContactDetails]:
    """(controller, dpo, complaint authority) as report contact details."""
    c, d, i = policy.controller, policy.dpo, policy.ico
    return (
        ContactDetails(name=c.name, address=c.address, phone=c.phone, email=c.email, web=c.url),
        ContactDetails(name=d.name, address=d.address, phone=d.phone, email=d.email, web=d.url),
        ContactDetails(name=i.name, address=i.address, phone=i.phone, email=i.email, web=i.url),
    )


# -- records and commands -----------------------------------------------------------


def group_by_system(
    ctx: Ctx,
    request: RequestState,
    records: Iterable[RecordState],
    rule_id: str,
    job: Job | None = None,
) -> tuple[dict[str, list[str]], Job | None]:
    """Record keys of the request's controller by system; records held for another
    controller (processor mode, N2) are passed to it (audit ``forward-to-controller``,
    once per controller of the job). Returns the groups and the job noting who was told."""
    groups: dict[str, list[str]] = defaultdict(list)
    told = {c for c in (job.data.get("forwarded", "") if job else "").split(",") if c}
    foreign: set[str] = set()
    for record in records:
        if record.controller_id != request.controller_id:
            foreign.add(record.controller_id)
            continue
        groups[record.system].append(record.key)
    for controller_id in sorted(foreign - told):
        ctx.audit(
            ids.N2_PROCESSOR,
            "forward-to-controller",
            controller_id=controller_id,
            request_id=request.request_id,
            request_type=request.request_type.value,
            rule=rule_id,
        )
    if job is not None and foreign - told:
        job = replace(job, data={**job.data, "forwarded": ",".join(sorted(told | foreign))})
    return dict(sorted(groups.items())), job


def issue_per_system(
    ctx: Ctx,
    request: RequestState,
    groups: dict[str, list[str]],
    *,
    action: Action,
    rule_id: str,
    parameters: Callable[[str, list[str]], dict[str, str]] | None = None,
    wait: bool = True,
) -> list[str]:
    """One command per system for the request; with ``wait`` the request waits for
    them (is answered when they are done). Returns the ids still outstanding."""
    from agents.rules import commands  # late: commands imports requests

    pending: list[str] = []
    for system, keys in groups.items():
        cid = commands.issue(
            ctx,
            action=action,
            system=system,
            controller_id=request.controller_id,
            rule_id=rule_id,
            record_keys=keys,
            request_id=request.request_id,
            parameters=parameters(system, keys) if parameters else None,
        )
        if cid is not None and cid not in pending:
            pending.append(cid)
    # An early ack may already have closed one of them.
    pending = [c for c in pending if c in ctx.commands]
    if wait:
        requests.await_commands(ctx, request.request_id, pending)
    current = ctx.subject.requests[request.request_id]
    systems = sorted(set(current.systems) | set(groups))
    if systems != current.systems:
        ctx.subject.requests[request.request_id] = replace(current, systems=systems)
    return pending


def wait_or_complete(ctx: Ctx, request_id: str) -> None:
    """The request's work is all sent: answer ``in_progress``, or complete at once."""
    request = ctx.subject.requests[request_id]
    if request.final:
        return
    if request.pending:
        requests.respond(ctx, request, ResponseStatus.IN_PROGRESS)
    else:
        requests.complete(ctx, request)


def page_suffix(job: Job, last: bool) -> dict[str, object]:
    """Audit details marking a page of a multi-page job: ``page`` = i, and on the last
    page ``pages`` = n, so a verifier can tell a complete set of pages (none for a
    one-page job, whose entry is the whole story)."""
    if job.page == 0 and last:
        return {}
    return {"page": job.page + 1, **({"pages": job.page + 1} if last else {})}


# -- opening requests and the identity gate -------------------------------------------


def gate(ctx: Ctx, request: RequestState, new_evidence: Iterable[str]) -> None:
    """Judge the request's identity evidence; start the workflow once verified."""
    verdict = evaluate_identity(
        EvidenceItem(
            evidence_id=n.evidence_id,
            document_type=n.document_type,
            received_at=n.received_at,
            issued_on=n.issued_on,
        )
        for n in request.evidence
    )
    fresh = set(new_evidence)
    for evidence_id, reason in verdict.rejected:
        if evidence_id in fresh:
            ctx.audit(
                N12_IDENTITY,
                "identity-evidence-rejected",
                controller_id=request.controller_id,
                request_id=request.request_id,
                evidence_id=evidence_id,
                reason=reason,
            )
    if verdict.verified:
        request = requests.start_clock(ctx, request, ctx.event_time)
        ctx.audit(
            N12_IDENTITY,
            "identity-verified",
            controller_id=request.controller_id,
            request_id=request.request_id,
            photo_id=verdict.photo_id or "-",
            supporting=verdict.supporting or "-",
            due_at=request.due_at,
        )
        _STARTERS[request.workflow or ""](ctx, request)
        return
    reasons = [
        short(f"Document {evidence_id} was not accepted: {reason}")
        for evidence_id, reason in verdict.rejected
    ][:_MAX_REASONS]
    requests.respond(
        ctx,
        request,
        ResponseStatus.AWAITING_IDENTITY,
        reasons=reasons,
        missing_evidence=[short(m) for m in verdict.missing],
        variant=f"evidence-{len(request.evidence)}" if request.evidence else "",
    )
    ctx.audit(
        N12_IDENTITY,
        "identity-awaited",
        controller_id=request.controller_id,
        request_id=request.request_id,
        evidence=len(request.evidence),
        rejected=len(verdict.rejected),
        missing=len(verdict.missing),
    )


@handles(IdentityEvidenceReceived)
def on_evidence(ctx: Ctx, event: IdentityEvidenceReceived) -> None:
    note = EvidenceNote(
        evidence_id=event.evidence_id,
        document_type=event.document_type,
        received_at=event.event_time,
        issued_on=event.issued_on,
    )

    def audit(decision: str, **details: Any) -> None:
        ctx.audit(
            N12_IDENTITY,
            decision,
            controller_id=event.controller_id,
            request_id=event.request_id,
            evidence_id=event.evidence_id,
            **details,
        )

    request = ctx.subject.requests.get(event.request_id)
    if request is None or request.placeholder:
        # Evidence ahead of its request is held (and discarded one period later).
        if request is None:
            due = requests.due_for(ctx.policy, RequestType.ACCESS, event.event_time)
            request = RequestState(
                request_id=event.request_id,
                request_type=RequestType.ACCESS,
                controller_id=event.controller_id,
                event_id=event.event_id,
                received_at=event.event_time,
                due_at=due,
                warn_at=due,
                status=ResponseStatus.AWAITING_IDENTITY,
                placeholder=True,
                identity_required=True,
                warned=True,
                evidence=[note],
            )
        elif (
            event.evidence_id not in {n.evidence_id for n in request.evidence}
            and len(request.evidence) < MAX_EVIDENCE
        ):
            request = replace(request, evidence=[*request.evidence, note])
        ctx.subject.requests[request.request_id] = request
        audit("identity-evidence-held", discard_at=request.due_at)
        return
    if not request.awaiting_identity or request.final:
        why = (
            "identity-not-required"
            if not request.identity_required
            else ("request-closed" if request.final else "already-verified")
        )
        audit("identity-evidence-ignored", why=why)
        return
    if event.evidence_id in {n.evidence_id for n in request.evidence}:
        audit("identity-evidence-duplicate")
        return
    if len(request.evidence) >= MAX_EVIDENCE:
        audit("identity-evidence-ignored", why="too-many-documents")
        return
    request = replace(request, evidence=[*request.evidence, note])
    ctx.subject.requests[request.request_id] = request
    gate(ctx, request, [event.evidence_id])


# -- acks for exports -------------------------------------------------------------------


def note_ack(ctx: Ctx, ack: CommandAck) -> None:
    """Keep what an EXPORT ack carries before the ack closes the command."""
    tracked = ctx.commands.get(ack.command_id)
    if tracked is None or ack.outcome not in (AckOutcome.DONE, AckOutcome.NOT_HELD):
        return
    command = tracked.command
    if command.action is not Action.EXPORT or command.request_id is None:
        return
    if ack.system != command.target_system:
        return
    request = ctx.subject.requests.get(command.request_id)
    if request is None or request.final:
        return
    note = ExportNote(
        system=command.target_system,
        command_id=command.command_id,
        export_reference=ack.export_reference,
    )
    ctx.item_put(request.request_id, ITEM_EXPORT, command.command_id, encode(note))
    if request.workflow == PORTABILITY:
        for record in ack.exported:
            if record.provided_by_subject:
                portable = PortableRecord(system=command.target_system, record=record)
                name = f"{command.target_system}/{record.record_id}"
                ctx.item_put(request.request_id, ITEM_PORTABLE, name, encode(portable))


# -- extension, refusal, complaint ------------------------------------------------------


def _find(ctx: Ctx, request_id: str, controller_id: str, rule_id: str) -> RequestState | None:
    request = ctx.subject.requests.get(request_id)
    if request is None or request.placeholder:
        ctx.audit(rule_id, "unknown-request", controller_id=controller_id, request_id=request_id)
        return None
    if request.final:
        ctx.audit(
            rule_id,
            "request-already-closed",
            controller_id=controller_id,
            request_id=request_id,
            status=request.status.value,
        )
        return None
    return request


@handles(RequestExtended)
def on_extended(ctx: Ctx, event: RequestExtended) -> None:
    request = _find(ctx, event.request_id, event.controller_id, N13_EXTENSION)
    if request is None:
        return
    total = request.extended_months + event.months
    refusal: str | None = None
    if request.request_type is RequestType.COMPLAINT:
        refusal = "complaints cannot be extended"
    elif request.clock_started_at is None:
        refusal = "the deadline has not started: identity is not yet verified"
    elif total > MAX_EXTENSION_MONTHS:
        refusal = f"at most {MAX_EXTENSION_MONTHS} further months in total"
    elif event.event_time > request.due_at:
        # Judged by when the extension was decided (event time), not when the worker
        # processes it: one decided in time but processed after the due date (a
        # backlog, a restart) still counts, and ``overdue`` (a processing-time flag
        # for alerts) is cleared below.
        refusal = "an extension must be decided before the due date"
    if refusal is not None or request.clock_started_at is None:
        ctx.audit(
            N13_EXTENSION,
            "extension-refused",
            controller_id=event.controller_id,
            request_id=event.request_id,
            months=event.months,
            why=refusal,
        )
        return
    due = requests.due_for(
        ctx.policy, request.request_type, request.clock_started_at, extended_months=total
    )
    request = replace(
        request,
        extended_months=total,
        due_at=due,
        warn_at=ctx.policy.requests.warn_before.before(due),
        warned=False,
        overdue=False,
    )
    ctx.subject.requests[request.request_id] = request
    reason = short(
        f"We need more time to answer ({event.reason}); the request has been extended by "
        f"{event.months} month(s) and will be answered by {uk_date(due).isoformat()}."
    )
    requests.respond(
        ctx,
        request,
        ResponseStatus.IN_PROGRESS,
        reasons=[reason],
        variant=f"extended-{total}",
    )
    ctx.audit(
        N13_EXTENSION,
        "request-extended",
        controller_id=event.controller_id,
        request_id=event.request_id,
        months=event.months,
        extended_months=total,
        due_at=due,
    )


@handles(RequestRefused)
def on_refused(ctx: Ctx, event: RequestRefused) -> None:
    request = _find(ctx, event.request_id, event.controller_id, N10_REFUSAL)
    if request is None:
        return
    controller, _dpo, authority = contacts(ctx.policy)
    text = refusal_text(
        request_type=request.request_type,
        request_id=request.request_id,
        reasons=[event.reason],
        controller=controller,
        authority=authority,
    )
    requests.respond(
        ctx,
        request,
        ResponseStatus.REFUSED,
        reasons=[short(event.reason), ctx.policy.complaint_text()],
        body_json=json.dumps({"kind": "refusal", "text": text}, ensure_ascii=False),
    )
    ctx.audit(
        N10_REFUSAL,
        "request-refused",
        controller_id=event.controller_id,
        request_id=event.request_id,
        request_type=request.request_type.value,
        commands_outstanding=request.pending,
    )


@handles(ComplaintReceived)
def on_complaint(ctx: Ctx, event: ComplaintReceived) -> None:
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.complaint_id,
        request_type=RequestType.COMPLAINT,
        controller_id=event.controller_id,
        event_id=event.event_id,
        workflow=COMPLAINT,
        rule_id=N13_COMPLAINT,
    )
    if request is None:
        return
    reason = short(
        f"We have received your complaint and will answer by "
        f"{uk_date(request.due_at).isoformat()}. If we do not, or you are not satisfied "
        f"with our answer: {ctx.policy.complaint_text()}"
    )
    requests.respond(ctx, request, ResponseStatus.IN_PROGRESS, reasons=[reason])


@handles(ComplaintAnswered)
def on_complaint_answered(ctx: Ctx, event: ComplaintAnswered) -> None:
    request = _find(ctx, event.complaint_id, event.controller_id, N13_COMPLAINT)
    if request is None:
        return
    if request.request_type is not RequestType.COMPLAINT:
        ctx.audit(
            N13_COMPLAINT,
            "not-a-complaint",
            controller_id=event.controller_id,
            request_id=event.complaint_id,
            request_type=request.request_type.value,
        )
        return
    requests.respond(
        ctx,
        request,
        ResponseStatus.COMPLETED,
        reasons=[event.answer, short(f"If you are not satisfied: {ctx.policy.complaint_text()}")],
    )
    ctx.audit(
        N13_COMPLAINT,
        "request-completed",
        controller_id=event.controller_id,
        request_id=event.complaint_id,
        request_type=RequestType.COMPLAINT.value,
        overdue=request.overdue,
    )
