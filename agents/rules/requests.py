"""Tracking data-subject requests to their end (N9, N10, N13).

A request is opened with a due date and a warning time (``requests.warn_before``
earlier). The due date (``due_for``) depends on ``requests.calendar``:

* ``uk-gdpr`` (the shipped policy): a rights request is due one calendar month
  after receipt, on the next England & Wales working day, at the end of that UK
  day (``agents.rights.deadlines.rights_request_due``); a complaint 30 days after
  receipt (``complaint_due``); an extension counts 1 + months calendar months
  from the day the clock started (``extend``).
* ``duration`` (compressed demo policies): ``requests.response_due`` after
  receipt, ``ico.complain_after`` for complaints, and an extension adds
  ``response_due`` once per month of extension.

Requests that need identity (access, portability: N12) start their clock when
identity is verified (``start_clock``); until then ``due_at`` is provisional
(one period from receipt, used to chase the evidence: audit
``identity-still-awaited`` once when it passes) and responses carry
``due_at = None``. Commands issued for it
are its pending items (``await_commands``; each command lists the requests
waiting for it); when the last one closes, and no page of its work is left,
the request is finalised: COMPLETED, or PARTIALLY_REFUSED when some records
were kept (each kept record is an item with a ``KeptItem`` saying why; a
response lists the first ``limits.MAX_KEPT_IN_RESPONSE`` and counts the rest,
and names the right to complain to the ICO). A command that is escalated marks
the request FAILED with a response, so a stuck request is visible; a later DONE
can still complete it.

Deadline audit entries: ``request-due-soon`` at the warning time and
``request-overdue`` at the due time, once each, for requests not final; an
overdue request stays open (it is never closed silently). Placeholders
(evidence received before its request) are discarded at their ``due_at`` with
audit ``identity-evidence-discarded``.

A final request leaves the state ``state.finished_requests_kept_for`` after it
closed (``forget_finished``); its answer stays on the responses topic and its
decisions in the audit trail.

Workflows other than erasure register a completer (``register_completer``)
that builds their final response when the last command closes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from agents.rights import deadlines
from agents.rules import cutoff, ids, jobs, limits
from agents.rules.context import Ctx
from agents.rules.policy import DeadlineCalendar, Policy
from agents.rules.state import (
    ITEM_KEPT,
    ITEM_PENDING,
    Job,
    KeptNote,
    OutstandingCommand,
    RequestState,
    replace,
)
from agents.store.codec import decode, encode
from schemas.base import RequestType
from schemas.responses import KeptItem, RequestResponse, ResponseStatus

FINAL = (ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED)

Completer = Callable[[Ctx, RequestState], None]
_COMPLETERS: dict[str, Completer] = {}


def register_completer(workflow: str, completer: Completer) -> None:
    """``completer`` answers requests of ``workflow`` once their commands are done."""
    if workflow in _COMPLETERS:
        raise ValueError(f"workflow {workflow!r} already has a completer")
    _COMPLETERS[workflow] = completer


def due_for(
    policy: Policy, request_type: RequestType, start: datetime, *, extended_months: int = 0
) -> datetime:
    """When a request whose clock started at ``start`` must be answered (N13)."""
    settings = policy.requests
    uk = settings.calendar is DeadlineCalendar.UK_GDPR
    if request_type is RequestType.COMPLAINT:
        return deadlines.complaint_due(start) if uk else policy.ico.complain_after.after(start)
    if uk:
        due = deadlines.rights_request_due(start)
        if extended_months:
            due = deadlines.extend(due, extended_months, received=start)
        return due
    due = start
    for _ in range(1 + extended_months):
        due = settings.response_due.after(due)
    return due


def existing_request(ctx: Ctx, request_id: str) -> RequestState | None:
    """The request already open under this id, if any.

    A placeholder (identity evidence that arrived before any request) is not a
    request: a request that then arrives under the same id is new, not a duplicate.
    """
    request = ctx.subject.requests.get(request_id)
    return None if request is None or request.placeholder else request


def open_request(
    ctx: Ctx,
    *,
    request_id: str,
    request_type: RequestType,
    controller_id: str,
    event_id: str,
    received_at: datetime,
    identity_required: bool = False,
    workflow: str | None = None,
) -> RequestState:
    settings = ctx.policy.requests
    due = due_for(ctx.policy, request_type, received_at)
    request = RequestState(
        request_id=request_id,
        request_type=request_type,
        controller_id=controller_id,
        event_id=event_id,
        received_at=received_at,
        due_at=due,
        warn_at=settings.warn_before.before(due),
        status=(
            ResponseStatus.AWAITING_IDENTITY if identity_required else ResponseStatus.IN_PROGRESS
        ),
        workflow=workflow,
        identity_required=identity_required,
        clock_started_at=None if identity_required else received_at,
        # No due-soon warning while the clock has not started.
        warned=identity_required,
    )
    ctx.subject.requests[request_id] = request
    ctx.notes.requests_opened.append(request_type.value)
    return request


def open_or_duplicate(
    ctx: Ctx,
    *,
    request_id: str,
    request_type: RequestType,
    controller_id: str,
    event_id: str,
    workflow: str | None = None,
    rule_id: str,
    identity_required: bool = False,
) -> RequestState | None:
    """Open the request, or audit ``duplicate-request`` and return None."""
    existing = ctx.subject.requests.get(request_id)
    if existing_request(ctx, request_id) is not None:
        ctx.audit(rule_id, "duplicate-request", controller_id=controller_id, request_id=request_id)
        return None
    request = open_request(
        ctx,
        request_id=request_id,
        request_type=request_type,
        controller_id=controller_id,
        event_id=event_id,
        received_at=ctx.event_time,
        identity_required=identity_required,
        workflow=workflow,
    )
    if existing is not None:  # evidence arrived first
        request = replace(request, evidence=existing.evidence)
        ctx.subject.requests[request_id] = request
    request = cutoff.arm(ctx, request)
    ctx.audit(
        rule_id,
        "request-opened",
        controller_id=controller_id,
        request_id=request_id,
        request_type=request_type.value,
        due_at="awaiting-identity" if identity_required else request.due_at,
    )
    return request


def start_clock(ctx: Ctx, request: RequestState, started_at: datetime) -> RequestState:
    """Identity verified: the deadline now runs from ``started_at`` (N12, N13)."""
    due = due_for(ctx.policy, request.request_type, started_at)
    request = replace(
        request,
        identity_verified_at=started_at,
        clock_started_at=started_at,
        due_at=due,
        warn_at=ctx.policy.requests.warn_before.before(due),
        warned=False,
        overdue=False,
        status=ResponseStatus.IN_PROGRESS,
        missing_evidence=[],
    )
    ctx.subject.requests[request.request_id] = request
    return request


def _response_id(request_id: str, status: ResponseStatus, variant: str = "") -> str:
    text = f"{request_id}\x1f{status.value}" + (f"\x1f{variant}" if variant else "")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"resp-{digest[:32]}"


def respond(
    ctx: Ctx,
    request: RequestState,
    status: ResponseStatus,
    *,
    reasons: list[str] | None = None,
    missing_evidence: list[str] | None = None,
    body_json: str | None = None,
    variant: str = "",
) -> RequestState:
    """Set the request's status and emit a response with it.

    The response lists the request's kept records (the first
    ``limits.MAX_KEPT_IN_RESPONSE``; a reason counts the rest). ``variant``
    distinguishes two responses of the same status for one request (e.g. a
    second ``awaiting_identity`` after more evidence, an extension), so each has
    its own stable response id."""
    kept = kept_items(ctx, request, limits.MAX_KEPT_IN_RESPONSE)
    reasons = list(request.reasons if reasons is None else reasons)
    shown = list(reasons)
    late = cutoff.lagging_reason(request) if status in FINAL else None
    if late is not None and late not in shown:
        last = shown and shown[-1] == ctx.policy.complaint_text()
        shown.insert(len(shown) - 1 if last else len(shown), late)
    if request.kept_count > len(kept):
        more = (
            f"{request.kept_count - len(kept)} further records are kept for the reasons "
            "given; the privacy desk can list every one."
        )
        last = shown and shown[-1] == ctx.policy.complaint_text()
        shown.insert(len(shown) - 1 if last else len(shown), more)
    was_final = request.final
    closed_at = ctx.now if status in FINAL else None
    missing = list(request.missing_evidence if missing_evidence is None else missing_evidence)
    request = replace(
        request,
        status=status,
        reasons=reasons,
        closed_at=closed_at,
        missing_evidence=missing,
    )
    ctx.subject.requests[request.request_id] = request
    if request.final and not was_final:
        ctx.notes.requests_closed.append((request.request_type.value, status.value))
    ctx.out_responses.append(
        RequestResponse(
            response_id=_response_id(request.request_id, status, variant),
            request_id=request.request_id,
            request_type=request.request_type,
            subject_id=ctx.subject_id,
            controller_id=request.controller_id,
            status=status,
            reasons=shown,
            kept=kept,
            missing_evidence=missing if status is ResponseStatus.AWAITING_IDENTITY else [],
            body_json=body_json,
            received_at=request.received_at,
            due_at=None if request.awaiting_identity else request.due_at,
            issued_at=ctx.now,
        )
    )
    return request


def kept_items(ctx: Ctx, request: RequestState, limit: int) -> list[KeptItem]:
    """The first ``limit`` records kept for the request, with why."""
    if not request.kept_count:
        return []
    return [
        decode(KeptNote, key.encode(), raw).item
        for key, raw in ctx.items(request.request_id, ITEM_KEPT, limit=limit)
    ]


def keep(ctx: Ctx, request_id: str, item: KeptItem) -> None:
    """Note a record kept for the request (N10)."""
    name = f"{item.system}/{item.record_id}"
    if ctx.item_get(request_id, ITEM_KEPT, name) is None:
        request = ctx.subject.requests[request_id]
        ctx.subject.requests[request_id] = replace(request, kept_count=request.kept_count + 1)
    ctx.item_put(request_id, ITEM_KEPT, name, encode(KeptNote(item=item)))


def refusal_reasons(ctx: Ctx, kept: list[KeptItem]) -> list[str]:
    """Why records were kept, once per distinct reason, then the right to complain (N10)."""
    seen = list(dict.fromkeys(item.reason for item in kept))[: limits.MAX_REASONS]
    return [*seen, ctx.policy.complaint_text()]


def finalize(ctx: Ctx, request: RequestState) -> RequestState:
    """All commands are done: close the request with its final status."""
    kept = kept_items(ctx, request, limits.MAX_KEPT_IN_RESPONSE)
    status = ResponseStatus.PARTIALLY_REFUSED if request.kept_count else ResponseStatus.COMPLETED
    reasons = refusal_reasons(ctx, kept) if request.kept_count else []
    request = respond(ctx, request, status, reasons=reasons)
    ctx.audit(
        ids.N9_ERASURE if request.request_type is RequestType.ERASURE else ids.DISPATCH,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        status=status.value,
        kept=request.kept_count,
    )
    return request


def complete(ctx: Ctx, request: RequestState) -> None:
    """Nothing is outstanding: answer with the workflow's completer, or ``finalize``;
    a request covering data as of its receipt waits for the watermarks first
    (``cutoff``: it is answered when they pass, or at its maximum wait)."""
    if not cutoff.ready(ctx, request):
        return
    request = ctx.subject.requests[request.request_id]
    completer = _COMPLETERS.get(request.workflow or "")
    if completer is None:
        finalize(ctx, request)
    else:
        completer(ctx, request)


def busy(ctx: Ctx, request_id: str) -> bool:
    """A page of the request's work is still to be done."""
    return any(j.ref == request_id for j in ctx.subject.jobs)


def await_commands(ctx: Ctx, request_id: str, command_ids: list[str]) -> None:
    """The request waits for these (outstanding) commands too."""
    for cid in command_ids:
        tracked = ctx.commands.get(cid)
        if tracked is None or ctx.item_get(request_id, ITEM_PENDING, cid) is not None:
            continue
        ctx.item_put(request_id, ITEM_PENDING, cid)
        if request_id not in tracked.waiters:
            ctx.commands[cid] = replace(tracked, waiters=[*tracked.waiters, request_id])
        request = ctx.subject.requests[request_id]
        ctx.subject.requests[request_id] = replace(request, pending=request.pending + 1)


def pending_ids(ctx: Ctx, request_id: str, limit: int = 10_000) -> list[str]:
    return [cid for cid, _ in ctx.items(request_id, ITEM_PENDING, limit=limit)]


def _release(ctx: Ctx, tracked: OutstandingCommand) -> list[RequestState]:
    """Stop the waiting requests from waiting for ``tracked``; returns them, updated."""
    out: list[RequestState] = []
    for request_id in tracked.waiters:
        request = ctx.subject.requests.get(request_id)
        if ctx.item_get(request_id, ITEM_PENDING, tracked.command_id) is None:
            continue
        ctx.item_delete(request_id, ITEM_PENDING, tracked.command_id)
        if request is None:
            continue
        request = replace(request, pending=max(0, request.pending - 1))
        ctx.subject.requests[request_id] = request
        out.append(request)
    return out


def on_command_closed(ctx: Ctx, tracked: OutstandingCommand) -> None:
    for request in _release(ctx, tracked):
        if request.pending or busy(ctx, request.request_id):
            continue
        if not request.final:
            complete(ctx, request)
        elif request.amending:
            amend(ctx, request)


def amend(ctx: Ctx, request: RequestState) -> RequestState:
    """Records reported late (from before the receipt) were dealt with after the
    answer: send the amended answer (N9, ``cutoff``)."""
    n = request.amendments + 1
    systems = ", ".join(request.late_systems) or "a system"
    what = {
        RequestType.ERASURE: "erased (or kept, for the reasons given)",
        RequestType.RESTRICTION: "restricted",
    }.get(request.request_type, "stopped")
    note = (
        f"This amends our earlier answer: {systems} reported data about you from before "
        f"your request after we had answered it; that data has now been {what} as well."
    )
    request = replace(request, amending=False, amendments=n, late_systems=[])
    ctx.subject.requests[request.request_id] = request
    status = request.status
    if request.request_type is RequestType.ERASURE:
        kept = kept_items(ctx, request, limits.MAX_KEPT_IN_RESPONSE)
        if request.kept_count:
            status = ResponseStatus.PARTIALLY_REFUSED if request.acted else ResponseStatus.REFUSED
            reasons = [note, *refusal_reasons(ctx, kept)]
        else:
            status, reasons = ResponseStatus.COMPLETED, [note]
    else:
        reasons = [note, *request.reasons][: limits.MAX_REASONS]
    request = respond(ctx, request, status, reasons=reasons, variant=f"amended-{n}")
    ctx.audit(
        cutoff.rule_for(request),
        "request-amended",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        status=status.value,
        amendment=n,
        kept=request.kept_count,
    )
    return request


def on_command_withdrawn(ctx: Ctx, tracked: OutstandingCommand) -> None:
    _release(ctx, tracked)


def on_command_escalated(ctx: Ctx, tracked: OutstandingCommand) -> None:
    command_id, system = tracked.command_id, tracked.command.target_system
    for request_id in tracked.waiters:
        request = ctx.subject.requests.get(request_id)
        if request is None or request.final:
            continue
        if ctx.item_get(request_id, ITEM_PENDING, command_id) is None:
            continue
        ctx.audit(
            ids.COMMAND_DELIVERY,
            "request-failed",
            controller_id=request.controller_id,
            command_ids=[command_id],
            request_id=request.request_id,
            request_type=request.request_type.value,
            system=system,
        )
        if request.status is not ResponseStatus.FAILED:
            reason = (
                f"System {system} has not confirmed the action after repeated attempts; "
                "the privacy desk has been alerted and will complete it."
            )
            respond(ctx, request, ResponseStatus.FAILED, reasons=[reason])


def fire_deadlines(ctx: Ctx) -> None:
    requests = ctx.subject.requests
    for request in list(requests.values()):
        if request.final:
            continue
        if request.placeholder:
            if request.due_at <= ctx.now:
                del requests[request.request_id]
                ctx.audit(
                    ids.N13_DEADLINE,
                    "identity-evidence-discarded",
                    controller_id=request.controller_id,
                    request_id=request.request_id,
                    evidence=len(request.evidence),
                )
            continue
        if request.awaiting_identity:
            # The clock has not started; chase the evidence once at the provisional due.
            if not request.overdue and request.due_at <= ctx.now:
                requests[request.request_id] = replace(request, overdue=True)
                ctx.audit(
                    ids.N13_DEADLINE,
                    "identity-still-awaited",
                    controller_id=request.controller_id,
                    request_id=request.request_id,
                    request_type=request.request_type.value,
                    received_at=request.received_at,
                )
            continue
        if not request.warned and request.warn_at <= ctx.now:
            request = replace(request, warned=True)
            ctx.audit(
                ids.N13_DEADLINE,
                "request-due-soon",
                controller_id=request.controller_id,
                request_id=request.request_id,
                request_type=request.request_type.value,
                due_at=request.due_at,
            )
        if not request.overdue and request.due_at <= ctx.now:
            request = replace(request, overdue=True)
            ctx.audit(
                ids.N13_DEADLINE,
                "request-overdue",
                controller_id=request.controller_id,
                request_id=request.request_id,
                request_type=request.request_type.value,
                due_at=request.due_at,
            )
        requests[request.request_id] = request


FORGET = "forget-request"


def forget_finished(ctx: Ctx) -> None:
    """Final requests leave the state once kept for the policy's period (their items a
    page at a time); the answer and the audit trail keep their outcome."""
    keep = ctx.policy.state.finished_requests_kept_for
    for request in list(ctx.subject.requests.values()):
        if not request.final or keep.after(request.closed_at or ctx.now) > ctx.now:
            continue
        if busy(ctx, request.request_id):
            continue  # its last page still runs; forgotten after it
        del ctx.subject.requests[request.request_id]
        ctx.subject.jobs.append(Job(kind=FORGET, ref=request.request_id))


@jobs.step(FORGET)
def _forget_items(ctx: Ctx, job: Job) -> Job | None:
    limit = max(1, min(limits.PAGE, ctx.budget))
    found = ctx.all_items(job.ref, limit=limit + 1)
    for key in found[:limit]:
        ctx.layer.delete(key)
    ctx.budget -= len(found[:limit])
    return None if len(found) <= limit else replace(job, page=job.page + 1)
