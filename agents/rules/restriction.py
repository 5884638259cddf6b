"""Restriction of processing (N9) and what may still be sent while it holds.

``RestrictionRequested`` sets ``state.restricted`` and sends RESTRICT to every
system holding the subject's records for the request's controller (rule
``N9.restriction``); the request completes when all are acknowledged (or at
once when nothing is held). The restriction stays in force after that answer,
until ``RestrictionLifted`` with the same request id: LIFT_RESTRICTION to the
systems of the records it covered that are still held (rule
``N9.restriction-lifted``), audit ``restriction-lifted``, and ``restricted``
drops to False when no other restriction is in force. The lift itself sends no
response (the privacy desk tells the subject before lifting, Art. 18(3)).

While restricted (``enforce`` runs after every decision):

* a record registered for the subject is restricted too: RESTRICT for it to its
  system, audit ``restriction-extended``;
* only storage-related commands and those the subject asked for go out
  (``ALLOWED_WHILE_RESTRICTED``): DELETE (retention still applies; each such
  deletion is audited ``deletion-while-restricted``), SUPPRESS_MARKETING and
  STOP_PROCESSING (they reduce processing), RESTRICT/LIFT_RESTRICTION, EXPORT
  and RECTIFY (the subject's own access, portability and rectification
  requests). Anything else would be processing: audited
  ``processing-while-restricted`` (a visible alarm; no workflow issues one).
"""

from __future__ import annotations

from agents.rules import commands, requests, rights
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import RecordStatus, RequestState, replace
from schemas.base import RequestType
from schemas.commands import Action
from schemas.events import RestrictionLifted, RestrictionRequested
from schemas.responses import ResponseStatus

ALLOWED_WHILE_RESTRICTED = frozenset(
    {
        Action.DELETE,
        Action.SUPPRESS_MARKETING,
        Action.STOP_PROCESSING,
        Action.RESTRICT,
        Action.LIFT_RESTRICTION,
        Action.EXPORT,
        Action.RECTIFY,
    }
)


def _active(ctx: Ctx) -> list[RequestState]:
    return [r for _, r in sorted(ctx.requests.items()) if r.restriction_active]


@handles(RestrictionRequested)
def on_restriction(ctx: Ctx, event: RestrictionRequested) -> None:
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.request_id,
        request_type=RequestType.RESTRICTION,
        controller_id=event.controller_id,
        event_id=event.event_id,
        workflow=rights.RESTRICTION,
        rule_id=rights.N9_RESTRICTION,
    )
    if request is None:
        return
    records = [r for r in rights.live_records(ctx) if r.status is RecordStatus.HELD]
    groups = rights.group_by_system(ctx, request, records, rights.N9_RESTRICTION)
    covered = [k for keys in groups.values() for k in keys]
    request = replace(request, restriction_active=True, record_keys=covered)
    ctx.requests[request.request_id] = request
    ctx.restricted = True
    pending = rights.issue_per_system(
        ctx, request, groups, action=Action.RESTRICT, rule_id=rights.N9_RESTRICTION
    )
    ctx.audit(
        rights.N9_RESTRICTION,
        "processing-restricted",
        controller_id=event.controller_id,
        command_ids=pending,
        request_id=event.request_id,
        systems=list(groups),
        records=len(covered),
    )
    rights.wait_or_complete(ctx, request, pending)


def _complete(ctx: Ctx, request: RequestState) -> None:
    if not request.restriction_active:
        return  # lifted before every system confirmed; answered at the lift
    systems = sorted({ctx.records[k].system for k in request.record_keys if k in ctx.records})
    reason = (
        "Processing of your data is restricted: it is only stored"
        + (f" (systems: {', '.join(systems)})" if systems else "")
        + " until the restriction is lifted; we will tell you before lifting it."
    )
    request = requests.respond(
        ctx, request, ResponseStatus.COMPLETED, reasons=[rights.short(reason)]
    )
    ctx.audit(
        rights.N9_RESTRICTION,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
    )


@handles(RestrictionLifted)
def on_lifted(ctx: Ctx, event: RestrictionLifted) -> None:
    request = ctx.requests.get(event.request_id)
    if request is None or not request.restriction_active:
        ctx.audit(
            rights.N9_RESTRICTION_LIFTED,
            "unknown-restriction",
            controller_id=event.controller_id,
            request_id=event.request_id,
        )
        return
    still_held = [
        record
        for key in request.record_keys
        if (record := ctx.records.get(key)) is not None and record.status is RecordStatus.HELD
    ]
    # All of the request's own controller (see on_restriction), so nothing is forwarded.
    groups = rights.group_by_system(ctx, request, still_held, rights.N9_RESTRICTION_LIFTED)
    # A RESTRICT still unacknowledged must not be re-sent after the lift: the
    # system would end up restricted while we believe it is not.
    unconfirmed = [
        cid
        for cid, tracked in ctx.commands.items()
        if tracked.command.request_id == request.request_id
        and tracked.command.action is Action.RESTRICT
    ]
    for cid in unconfirmed:
        commands.withdraw(ctx, cid, rule_id=rights.N9_RESTRICTION_LIFTED, why="restriction-lifted")
    request = replace(request, restriction_active=False, pending_command_ids=[])
    ctx.requests[request.request_id] = request
    ctx.restricted = bool(_active(ctx))
    if not request.final:
        # Answered now, since the restriction it asked for is over.
        request = requests.respond(
            ctx,
            request,
            ResponseStatus.COMPLETED,
            reasons=[
                rights.short(
                    "Processing of your data was restricted as you asked; the restriction "
                    "has now been lifted."
                )
            ],
        )
    sent = rights.issue_per_system(
        ctx,
        request,
        groups,
        action=Action.LIFT_RESTRICTION,
        rule_id=rights.N9_RESTRICTION_LIFTED,
    )
    ctx.audit(
        rights.N9_RESTRICTION_LIFTED,
        "restriction-lifted",
        controller_id=event.controller_id,
        command_ids=sent,
        request_id=event.request_id,
        systems=list(groups),
        still_restricted=ctx.restricted,
    )


def enforce(ctx: Ctx) -> None:
    """After a decision: extend restrictions to new records, check what went out."""
    if not ctx.restricted:
        return
    for request in _active(ctx):
        covered = set(request.record_keys)
        new = [
            r
            for r in rights.live_records(ctx)
            if r.key not in covered
            and r.status is RecordStatus.HELD
            and r.controller_id == request.controller_id
        ]
        if not new:
            continue
        groups = rights.group_by_system(ctx, request, new, rights.N9_RESTRICTION)
        request = replace(request, record_keys=sorted(covered | {r.key for r in new}))
        ctx.requests[request.request_id] = request
        sent = rights.issue_per_system(
            ctx,
            request,
            groups,
            action=Action.RESTRICT,
            rule_id=rights.N9_RESTRICTION,
        )
        ctx.audit(
            rights.N9_RESTRICTION,
            "restriction-extended",
            controller_id=request.controller_id,
            command_ids=sent,
            request_id=request.request_id,
            record_ids=[r.record_id for r in new],
        )
    for command in ctx.out_commands:
        if command.action is Action.DELETE:
            ctx.audit(
                rights.N9_RESTRICTION,
                "deletion-while-restricted",
                controller_id=command.controller_id,
                command_ids=[command.command_id],
                system=command.target_system,
                rule=command.rule_id,
            )
        elif command.action not in ALLOWED_WHILE_RESTRICTED:
            ctx.audit(
                rights.N9_RESTRICTION,
                "processing-while-restricted",
                controller_id=command.controller_id,
                command_ids=[command.command_id],
                system=command.target_system,
                action=command.action.value,
            )


requests.register_completer(rights.RESTRICTION, _complete)
