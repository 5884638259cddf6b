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

The records a restriction covers are its request items; the restriction and
its lift go through them a page at a time (``agents.rules.jobs``).

While restricted (``enforce`` runs after every decision):

* a record registered for the subject in that decision is restricted too:
  RESTRICT for it to its system, audit ``restriction-extended``;
* only storage-related commands and those the subject asked for go out
  (``ALLOWED_WHILE_RESTRICTED``): DELETE (retention still applies; each such
  deletion is audited ``deletion-while-restricted``), SUPPRESS_MARKETING and
  STOP_PROCESSING (they reduce processing), RESTRICT/LIFT_RESTRICTION, EXPORT
  and RECTIFY (the subject's own access, portability and rectification
  requests). Anything else would be processing: audited
  ``processing-while-restricted`` (a visible alarm; no workflow issues one).
"""

from __future__ import annotations

from agents.rules import commands, jobs, limits, requests, rights
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import ITEM_COVERED, Job, RecordStatus, RequestState, replace
from schemas.base import RequestType
from schemas.commands import Action
from schemas.events import RestrictionLifted, RestrictionRequested
from schemas.responses import ResponseStatus

RESTRICT = "restrict"
LIFT = "lift-restriction"

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
    return [r for _, r in sorted(ctx.subject.requests.items()) if r.restriction_active]


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
    ctx.subject.requests[request.request_id] = replace(request, restriction_active=True)
    ctx.subject.restricted = True
    jobs.start(ctx, RESTRICT, request.request_id)


@jobs.step(RESTRICT)
def _restrict_page(ctx: Ctx, job: Job) -> Job | None:
    request = ctx.subject.requests.get(job.ref)
    if request is None or not request.restriction_active:
        return None  # lifted before every page was sent
    page, last = jobs.page(ctx, job)
    held = [r for r in page if r.status is RecordStatus.HELD]
    groups, noted = rights.group_by_system(ctx, request, held, rights.N9_RESTRICTION, job)
    covered = [k for keys in groups.values() for k in keys]
    for key in covered:
        ctx.item_put(request.request_id, ITEM_COVERED, key)
    pending = rights.issue_per_system(
        ctx, request, groups, action=Action.RESTRICT, rule_id=rights.N9_RESTRICTION
    )
    ctx.audit(
        rights.N9_RESTRICTION,
        "processing-restricted",
        controller_id=request.controller_id,
        command_ids=pending,
        request_id=request.request_id,
        systems=list(groups),
        records=len(covered),
        **rights.page_suffix(job, last),
    )
    if not last:
        return jobs.advance(noted or job, page)
    rights.wait_or_complete(ctx, request.request_id)
    return None


def _complete(ctx: Ctx, request: RequestState) -> None:
    if not request.restriction_active:
        return  # lifted before every system confirmed; answered at the lift
    systems = request.systems
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
    request = ctx.subject.requests.get(event.request_id)
    if request is None or not request.restriction_active:
        ctx.audit(
            rights.N9_RESTRICTION_LIFTED,
            "unknown-restriction",
            controller_id=event.controller_id,
            request_id=event.request_id,
        )
        return
    jobs.cancel(ctx, RESTRICT, request.request_id)
    # A RESTRICT still unacknowledged must not be re-sent after the lift: the
    # system would end up restricted while we believe it is not.
    for cid in requests.pending_ids(ctx, request.request_id):
        tracked = ctx.commands.get(cid)
        if tracked is not None and tracked.command.action is Action.RESTRICT:
            commands.withdraw(
                ctx, cid, rule_id=rights.N9_RESTRICTION_LIFTED, why="restriction-lifted"
            )
    request = replace(ctx.subject.requests[request.request_id], restriction_active=False)
    ctx.subject.requests[request.request_id] = request
    ctx.subject.restricted = bool(_active(ctx))
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
    jobs.start(ctx, LIFT, request.request_id)


@jobs.step(LIFT)
def _lift_page(ctx: Ctx, job: Job) -> Job | None:
    """LIFT_RESTRICTION to the systems of the covered records still held, a page at a time."""
    request = ctx.subject.requests.get(job.ref)
    if request is None:
        return None
    limit = max(1, min(limits.PAGE, ctx.budget))
    found = ctx.items(request.request_id, ITEM_COVERED, after=job.cursor, limit=limit + 1)
    last = len(found) <= limit
    keys = [k for k, _ in found[:limit]]
    ctx.budget -= len(keys)
    still_held = [
        record
        for key in keys
        if (record := ctx.records.get(key)) is not None and record.status is RecordStatus.HELD
    ]
    for key in keys:
        ctx.item_delete(request.request_id, ITEM_COVERED, key)
    # All of the request's own controller (see on_restriction), so nothing is forwarded.
    groups, _ = rights.group_by_system(ctx, request, still_held, rights.N9_RESTRICTION_LIFTED)
    sent = rights.issue_per_system(
        ctx,
        request,
        groups,
        action=Action.LIFT_RESTRICTION,
        rule_id=rights.N9_RESTRICTION_LIFTED,
        wait=False,
    )
    ctx.audit(
        rights.N9_RESTRICTION_LIFTED,
        "restriction-lifted",
        controller_id=request.controller_id,
        command_ids=sent,
        request_id=request.request_id,
        systems=list(groups),
        still_restricted=ctx.subject.restricted,
        **rights.page_suffix(job, last),
    )
    return None if last else replace(job, cursor=keys[-1], page=job.page + 1)


def enforce(ctx: Ctx) -> None:
    """After a decision: extend restrictions to new records, check what went out."""
    if not ctx.subject.restricted:
        return
    for request in _active(ctx):
        new = [
            r
            for key in dict.fromkeys(ctx.registered)
            if (r := ctx.records.get(key)) is not None
            and r.status is RecordStatus.HELD
            and r.controller_id == request.controller_id
            and ctx.item_get(request.request_id, ITEM_COVERED, key) is None
        ]
        if not new:
            continue
        groups, _ = rights.group_by_system(ctx, request, new, rights.N9_RESTRICTION)
        for record in new:
            ctx.item_put(request.request_id, ITEM_COVERED, record.key)
        sent = rights.issue_per_system(
            ctx,
            request,
            groups,
            action=Action.RESTRICT,
            rule_id=rights.N9_RESTRICTION,
            wait=False,
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
