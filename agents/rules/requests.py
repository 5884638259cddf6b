"""Tracking data-subject requests to their end (N9, N10, N13).

A request is opened with a due date (``requests.response_due`` after receipt)
and a warning time (``requests.warn_before`` earlier). Commands issued for it
are listed in ``pending_command_ids``; when the last one closes the request is
finalised: COMPLETED, or PARTIALLY_REFUSED when some records were kept (each
``KeptItem`` says why, and the response names the right to complain to the
ICO). A command that is escalated marks the request FAILED with a response, so
a stuck request is visible; a later DONE can still complete it.

Deadline audit entries: ``request-deadline-near`` at the warning time and
``request-overdue`` at the due time, once each, for requests not final.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from agents.rules import ids
from agents.rules.context import Ctx
from agents.rules.state import RequestState, replace
from schemas.base import RequestType
from schemas.responses import KeptItem, RequestResponse, ResponseStatus


def open_request(
    ctx: Ctx,
    *,
    request_id: str,
    request_type: RequestType,
    controller_id: str,
    event_id: str,
    received_at: datetime,
) -> RequestState:
    settings = ctx.policy.requests
    due = settings.response_due.after(received_at)
    request = RequestState(
        request_id=request_id,
        request_type=request_type,
        controller_id=controller_id,
        event_id=event_id,
        received_at=received_at,
        due_at=due,
        warn_at=settings.warn_before.before(due),
        status=ResponseStatus.IN_PROGRESS,
    )
    ctx.requests[request_id] = request
    return request


def _response_id(request_id: str, status: ResponseStatus) -> str:
    digest = hashlib.sha256(f"{request_id}\x1f{status.value}".encode()).hexdigest()
    return f"resp-{digest[:32]}"


def respond(
    ctx: Ctx,
    request: RequestState,
    status: ResponseStatus,
    *,
    reasons: list[str] | None = None,
    kept: list[KeptItem] | None = None,
) -> RequestState:
    """Set the request's status and emit a response with it."""
    kept = list(request.kept if kept is None else kept)
    reasons = list(request.reasons if reasons is None else reasons)
    closed_at = (
        ctx.now
        if status
        in (ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED)
        else None
    )
    request = replace(request, status=status, kept=kept, reasons=reasons, closed_at=closed_at)
    ctx.requests[request.request_id] = request
    ctx.out_responses.append(
        RequestResponse(
            response_id=_response_id(request.request_id, status),
            request_id=request.request_id,
            request_type=request.request_type,
            subject_id=ctx.subject_id,
            controller_id=request.controller_id,
            status=status,
            reasons=reasons,
            kept=kept,
            received_at=request.received_at,
            due_at=request.due_at,
            issued_at=ctx.now,
        )
    )
    return request


def refusal_reasons(ctx: Ctx, kept: list[KeptItem]) -> list[str]:
    """Why records were kept, once per distinct reason, then the right to complain (N10)."""
    seen = list(dict.fromkeys(item.reason for item in kept))
    return [*seen, ctx.policy.complaint_text()]


def finalize(ctx: Ctx, request: RequestState) -> RequestState:
    """All commands are done: close the request with its final status."""
    status = ResponseStatus.PARTIALLY_REFUSED if request.kept else ResponseStatus.COMPLETED
    reasons = refusal_reasons(ctx, request.kept) if request.kept else []
    request = respond(ctx, request, status, reasons=reasons)
    ctx.audit(
        ids.N9_ERASURE if request.request_type is RequestType.ERASURE else ids.DISPATCH,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        status=status.value,
        kept=len(request.kept),
    )
    return request


def on_command_closed(ctx: Ctx, command_id: str) -> None:
    for request in list(ctx.requests.values()):
        if command_id not in request.pending_command_ids:
            continue
        pending = [c for c in request.pending_command_ids if c != command_id]
        request = replace(request, pending_command_ids=pending)
        ctx.requests[request.request_id] = request
        if not pending and not request.final:
            finalize(ctx, request)


def on_command_escalated(ctx: Ctx, command_id: str, system: str) -> None:
    for request in list(ctx.requests.values()):
        if command_id not in request.pending_command_ids or request.final:
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
    for request in list(ctx.requests.values()):
        if request.final:
            continue
        if not request.warned and request.warn_at <= ctx.now:
            request = replace(request, warned=True)
            ctx.audit(
                ids.N13_DEADLINE,
                "request-deadline-near",
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
        ctx.requests[request.request_id] = request
