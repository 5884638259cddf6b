"""Rectification (N9): corrections go to every system whose records hold the field.

``RectificationRequested(corrections)`` opens a request and sends RECTIFY (rule
``N9.rectification``) to each system holding a record of the subject (for the
request's controller) whose ``fields`` include a corrected field; the
command's ``parameters`` are the corrections for the fields that system's
records hold (values leave only with the command; the state and audit keep
field names only). Fields no system holds are named in the answer ("nothing to
correct"). Completed when every system acknowledged, or at once when no
system holds any corrected field. The records are gone through a page at a
time; the answer and the ``rectification-requested`` summary come with the
last page.
"""

from __future__ import annotations

from agents.rules import jobs, requests, rights
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import Job, RecordStatus, RequestState, replace
from schemas.base import RequestType
from schemas.commands import Action
from schemas.events import RectificationRequested
from schemas.responses import ResponseStatus

RECTIFY = "rectify"


@handles(RectificationRequested)
def on_rectification(ctx: Ctx, event: RectificationRequested) -> None:
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.request_id,
        request_type=RequestType.RECTIFICATION,
        controller_id=event.controller_id,
        event_id=event.event_id,
        workflow=rights.RECTIFICATION,
        rule_id=rights.N9_RECTIFICATION,
    )
    if request is None:
        return
    # The corrections travel with the job (values leave only with the commands;
    # the state keeps the job only while its pages run).
    data = {f"fix-{name}": value for name, value in sorted(event.corrections.items())}
    jobs.start(ctx, RECTIFY, request.request_id, **data)


@jobs.step(RECTIFY)
def _rectify_page(ctx: Ctx, job: Job) -> Job | None:
    request = ctx.subject.requests.get(job.ref)
    if request is None or request.final:
        return None
    corrections = {k[4:]: v for k, v in job.data.items() if k.startswith("fix-")}
    wanted = set(corrections)
    page, last = jobs.page(ctx, job)
    records = [r for r in page if r.status is RecordStatus.HELD and wanted & set(r.fields)]
    groups, noted = rights.group_by_system(ctx, request, records, rights.N9_RECTIFICATION, job)

    def corrections_for(_system: str, keys: list[str]) -> dict[str, str]:
        held = {f for k in keys for f in ctx.records[k].fields}
        return {f: v for f, v in sorted(corrections.items()) if f in held}

    rights.issue_per_system(
        ctx,
        request,
        groups,
        action=Action.RECTIFY,
        rule_id=rights.N9_RECTIFICATION,
        parameters=corrections_for,
    )
    held_fields = {f for keys in groups.values() for k in keys for f in ctx.records[k].fields}
    held_fields |= {f for f in job.data.get("held", "").split(",") if f}
    if not last:
        job = noted or job
        return jobs.advance(job, page, held=",".join(sorted(held_fields & wanted)))
    not_held = sorted(wanted - held_fields)
    reasons = (
        [
            rights.short(
                "We hold no data in these fields, so there was nothing to correct: "
                + ", ".join(not_held)
            )
        ]
        if not_held
        else []
    )
    request = replace(ctx.subject.requests[request.request_id], reasons=reasons)
    ctx.subject.requests[request.request_id] = request
    ctx.audit(
        rights.N9_RECTIFICATION,
        "rectification-requested",
        controller_id=request.controller_id,
        command_ids=requests.pending_ids(ctx, request.request_id),
        request_id=request.request_id,
        systems=request.systems,
        fields=sorted(wanted & held_fields),
        fields_not_held=not_held,
    )
    rights.wait_or_complete(ctx, request.request_id)
    return None


def _complete(ctx: Ctx, request: RequestState) -> None:
    systems = request.systems
    reasons = list(request.reasons)
    if systems:
        reasons.insert(0, rights.short("Your data has been corrected in: " + ", ".join(systems)))
    request = requests.respond(ctx, request, ResponseStatus.COMPLETED, reasons=reasons)
    ctx.audit(
        rights.N9_RECTIFICATION,
        "request-completed",
        controller_id=request.controller_id,
        request_id=request.request_id,
        request_type=request.request_type.value,
        systems=systems,
    )


requests.register_completer(rights.RECTIFICATION, _complete)
