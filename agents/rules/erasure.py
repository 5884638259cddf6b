"""Erasure requests, "in certain circumstances" (N9), with reasons for what stays (N10).

On ``ErasureRequested`` every record the subject has is examined:

* covered by a legal hold, or kept under the legal-obligation retention rule
  (N6: a legal-obligation category of a subject with a contract, active or
  ended within the retention period) -> kept, listed as a ``KeptItem`` with
  the reason;
* held for another controller (processor mode, N2: records whose
  ``controller_id`` differs from the request's) -> kept: the company acts on
  that controller's instructions, so the request is passed to it (audit
  ``forward-to-controller``) rather than acted on here;
* already being deleted -> the request waits for that command too;
* anything else -> DELETE, one command per system and controller (rule
  ``N9.erasure``, ``request_id`` set), processors included (N5).

Responses: ``in_progress`` at once when commands are outstanding (listing what
is kept); the final answer when every command is acknowledged DONE/NOT_HELD
and every source has been seen past the receipt, or the policy's maximum wait
passed (``cutoff``: records reported late are erased under the request and the
subject gets an amended answer):
``completed``, or ``partially_refused`` when something is kept. When nothing
can be erased but something is kept: ``refused`` at once. Refusals carry the
reasons and the right to complain to the ICO. An escalated command makes the
request ``failed`` (see requests.py).

Records are examined a page at a time (``jobs``): each page issues its own
commands (at most ``limits.CHUNK`` records each, with stable ids) and its own
``erasure-decided`` audit entry naming the page's erased and kept records, so
the proof of an erasure names every record across its entries; the answer
comes with the last page.

Confirmed deletions drop the records from the state; the suppression list,
kept records and the request's outcome remain.
"""

from __future__ import annotations

from collections import defaultdict

from agents.rules import commands, ids, jobs, limits, requests, retention
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.rights import page_suffix
from agents.rules.state import Job, RecordStatus, RequestState, replace
from schemas.base import RequestType
from schemas.commands import Action
from schemas.events import ErasureRequested
from schemas.responses import KeptItem, ResponseStatus

ERASURE = "erasure"


@handles(ErasureRequested)
def on_erasure(ctx: Ctx, event: ErasureRequested) -> None:
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.request_id,
        request_type=RequestType.ERASURE,
        controller_id=event.controller_id,
        event_id=event.event_id,
        rule_id=ids.N9_ERASURE,
        workflow=ERASURE,
    )
    if request is not None:
        jobs.start(ctx, ERASURE, event.request_id)


@jobs.step(ERASURE)
def _erase_page(ctx: Ctx, job: Job) -> Job | None:
    request = ctx.subject.requests.get(job.ref)
    if request is None:
        return None
    records, last = jobs.page(ctx, job)
    forwarded = {c for c in job.data.get("forwarded", "").split(",") if c}
    pending: list[str] = []
    kept: list[str] = []
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        if record.status is RecordStatus.DELETING:
            if record.command_id and record.command_id not in pending:
                pending.append(record.command_id)
            continue
        reason = retention.keep_reason(ctx, record)
        if reason is None and record.controller_id != request.controller_id:
            reason = (
                f"Processed on behalf of {record.controller_id}, which decides on erasure; "
                "the request has been passed to it"
            )
            forwarded.add(record.controller_id)
        if reason is not None:
            requests.keep(
                ctx,
                job.ref,
                KeptItem(
                    record_id=record.record_id,
                    system=record.system,
                    category=record.category,
                    reason=reason,
                ),
            )
            kept.append(record.record_id)
            continue
        groups[(record.system, record.controller_id)].append(record.key)
    erased: list[str] = []
    for (system, controller_id), keys in sorted(groups.items()):
        erased += [ctx.records[k].record_id for k in keys]
        cid = commands.issue(
            ctx,
            action=Action.DELETE,
            system=system,
            controller_id=controller_id,
            rule_id=ids.N9_ERASURE,
            record_keys=keys,
            request_id=job.ref,
        )
        if cid is not None and cid not in pending:
            pending.append(cid)
    # An early ack may already have closed a command issued above.
    pending = [c for c in pending if c in ctx.commands]
    requests.await_commands(ctx, job.ref, pending)
    if (erased or pending) and not ctx.subject.requests[job.ref].acted:
        ctx.subject.requests[job.ref] = replace(ctx.subject.requests[job.ref], acted=True)
    ctx.audit(
        ids.N9_ERASURE,
        "erasure-decided",
        controller_id=request.controller_id,
        command_ids=pending,
        request_id=job.ref,
        records_erased=erased,
        records_kept=kept,
        systems=sorted({s for s, _ in groups}),
        **page_suffix(job, last),
    )
    erased_total = int(job.data.get("erased", "0")) + len(erased)
    if not last:
        return jobs.advance(
            job, records, forwarded=",".join(sorted(forwarded)), erased=str(erased_total)
        )
    for controller_id in sorted(forwarded):
        ctx.audit(
            ids.N2_PROCESSOR,
            "forward-to-controller",
            controller_id=controller_id,
            request_id=job.ref,
            request_type=RequestType.ERASURE.value,
        )
    _answer(ctx, ctx.subject.requests[job.ref])
    return None


def _answer(ctx: Ctx, request: RequestState) -> None:
    if request.final:
        return  # refused by the desk while its pages ran
    if request.pending:
        requests.respond(ctx, request, ResponseStatus.IN_PROGRESS)
    else:
        # Answered now, or once every source has been seen past the receipt (cutoff).
        requests.complete(ctx, request)


def _conclude(ctx: Ctx, request: RequestState) -> None:
    """Every command is done (and the cutoff reached): the final answer."""
    if request.kept_count and not request.acted:
        kept = requests.kept_items(ctx, request, limits.MAX_KEPT_IN_RESPONSE)
        requests.respond(
            ctx, request, ResponseStatus.REFUSED, reasons=requests.refusal_reasons(ctx, kept)
        )
        ctx.audit(
            ids.N9_ERASURE,
            "request-refused",
            controller_id=request.controller_id,
            request_id=request.request_id,
            kept=request.kept_count,
        )
    else:
        requests.finalize(ctx, request)


requests.register_completer(ERASURE, _conclude)
