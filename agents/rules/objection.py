"""Objections (N9): direct marketing and automated processing / profiling.

``ObjectionReceived(kind=direct_marketing)`` is passed unchanged to
``marketing.object_to_marketing`` (an opt-out on all channels, tracked as a request).

``ObjectionReceived(kind=automated_processing)`` opens an objection request and
sends STOP_PROCESSING (rule ``N9.objection-automated-processing``,
``parameters.purpose = profiling``) to every system the policy marks
``automated_processing: true`` that holds the subject's records. The answer
(``completed`` once every system acknowledged, or at once when none applies)
says which systems stopped, or that no automated processing applies.
"""

from __future__ import annotations

from agents.rules import jobs, marketing, requests, rights
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import Job, RecordStatus, RequestState
from schemas.base import ObjectionKind, RequestType
from schemas.commands import Action
from schemas.events import ObjectionReceived
from schemas.responses import ResponseStatus

STOP_PROFILING = "stop-profiling"


def _automated(ctx: Ctx, system: str) -> bool:
    target = ctx.policy.system(system)
    return target is not None and target.automated_processing


@handles(ObjectionReceived)
def on_objection(ctx: Ctx, event: ObjectionReceived) -> None:
    if event.kind is not ObjectionKind.AUTOMATED_PROCESSING:
        marketing.object_to_marketing(ctx, event)
        return
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.request_id,
        request_type=RequestType.OBJECTION,
        controller_id=event.controller_id,
        event_id=event.event_id,
        workflow=rights.OBJECTION_PROFILING,
        rule_id=rights.N9_OBJECTION_PROFILING,
    )
    if request is not None:
        jobs.start(ctx, STOP_PROFILING, request.request_id)


@jobs.step(STOP_PROFILING)
def _stop_page(ctx: Ctx, job: Job) -> Job | None:
    request = ctx.subject.requests.get(job.ref)
    if request is None or request.final:
        return None
    page, last = jobs.page(ctx, job)
    records = [r for r in page if r.status is RecordStatus.HELD and _automated(ctx, r.system)]
    groups, noted = rights.group_by_system(
        ctx, request, records, rights.N9_OBJECTION_PROFILING, job
    )
    pending = rights.issue_per_system(
        ctx,
        request,
        groups,
        action=Action.STOP_PROCESSING,
        rule_id=rights.N9_OBJECTION_PROFILING,
        parameters=lambda _system, _keys: {"purpose": "profiling"},
    )
    ctx.audit(
        rights.N9_OBJECTION_PROFILING,
        "profiling-stopped",
        controller_id=request.controller_id,
        command_ids=pending,
        request_id=request.request_id,
        systems=list(groups),
        **rights.page_suffix(job, last),
    )
    if not last:
        return jobs.advance(noted or job, page)
    rights.wait_or_complete(ctx, request.request_id)
    return None


def _complete(ctx: Ctx, request: RequestState) -> None:
    systems = request.systems
    if systems:
        reason = (
            "Automated processing and profiling of your data has stopped on: "
            + ", ".join(systems)
            + "."
        )
    else:
        reason = "No automated processing or profiling applies to the data we hold about you."
    request = requests.respond(
        ctx, request, ResponseStatus.COMPLETED, reasons=[rights.short(reason)]
    )
    ctx.audit(
        rights.N9_OBJECTION_PROFILING,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        systems=systems,
    )


requests.register_completer(rights.OBJECTION_PROFILING, _complete)
