"""Event time and watermarks: a request covers the subject's data as of its receipt (N9).

Events of one person reach the pipeline on several systems' topics, in no
order across topics, and a system may report a record late. So an erasure,
restriction or objection to profiling covers what the subject's data *was* at
the request's receipt (``received_at``, event time), and:

* **Watermarks.** Each partition keeps, per publishing system in the policy's
  ``event_time.sources``, the time up to which it has seen that system
  (``w / source`` in the partition's store): the latest event time of the
  system's events in the partition less ``allowed_lateness``, or a
  ``SourceWatermark`` heartbeat the system published to every partition of its
  topic, whichever is later, never beyond the worker's clock and never
  backwards. A system publishes on its own topic, in order per partition, so once
  the partition has read past time T of that system, every earlier event of it
  for the partition's subjects has been read.
* **Answers wait.** The final answer waits until every source's watermark has
  passed the receipt, or until ``event_time.max_wait`` after the request was
  opened (processing time: a stalled system's event time does not move, which is
  exactly the case to bound), whichever comes first (audit ``cutoff-settled``:
  ``waited`` = ``caught-up`` or ``max-wait``, ``lagging`` = the sources that had
  not caught up). The answer names the sources that had not caught up. The work
  itself (DELETE, RESTRICT, STOP_PROCESSING) is not delayed.
* **Waking.** A waiting request has an entry ``v / be64(receipt) / subject /
  request`` in its partition; the worker's timer reads the partition's
  watermarks and ticks the subjects whose receipt they have all passed
  (``agents.runtime.scheduler.Waker.caught_up``). The maximum wait is a due item
  of the subject's header, so the timer wakes it then too.
* **Late records.** A record whose event time is at or before the receipt of
  one of the subject's erasure, restriction or objection-to-profiling requests,
  registered while the request waits or after it was answered, is dealt with
  under that request at once: erased (or kept, with the reason), restricted, or
  stopped (profiling systems), audited ``late-record-erased`` /
  ``late-record-kept`` / ``late-record-restricted`` / ``late-record-stopped``.
  After the answer the request is ``amending``: an amended answer (response
  variant ``amended-<n>``) follows when the new commands are done, naming the
  systems that reported late; ``lifecycle_late_records_total`` counts them.
  This holds while the request is in the subject's state
  (``state.finished_requests_kept_for`` after its answer).

Objections to direct marketing need no cutoff: the suppression list stops any
marketing record whenever it is reported (N1, ``marketing.check_re_add``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from agents.rules import ids
from agents.rules.context import Ctx, to_ms
from agents.rules.policy import Policy
from agents.rules.state import ITEM_COVERED, RecordState, RecordStatus, RequestState, replace
from agents.store import keys
from agents.store.layer import Entries, Layer, Write
from schemas.base import RequestType
from schemas.commands import Action
from schemas.events import Event, SourceWatermark
from schemas.responses import KeptItem, ResponseStatus

# Rule ids (as in agents.rules.rights, not imported: rights imports requests).
N9_RESTRICTION = "N9.restriction"
N9_OBJECTION_PROFILING = "N9.objection-automated-processing"
OBJECTION_PROFILING = "objection-profiling"

# The request types whose answers wait for the watermarks.
COVERING = frozenset({RequestType.ERASURE, RequestType.RESTRICTION, RequestType.OBJECTION})
# Systems named in an amended answer (bounded like the policy's systems).
MAX_LATE_SYSTEMS = 50


def covering(request: RequestState) -> bool:
    """Erasure, restriction and objection to profiling cover data as of receipt."""
    if request.request_type is RequestType.OBJECTION:
        return request.workflow == OBJECTION_PROFILING
    return request.request_type in COVERING


def rule_for(request: RequestState) -> str:
    if request.request_type is RequestType.ERASURE:
        return ids.N9_ERASURE
    if request.request_type is RequestType.RESTRICTION:
        return N9_RESTRICTION
    return N9_OBJECTION_PROFILING


# -- watermarks ------------------------------------------------------------------------


def watermark(entries: Entries, source: str) -> int | None:
    """The partition's watermark of ``source`` (ms), or None if never seen."""
    raw = entries.get(keys.watermark(source))
    return None if raw is None else keys.from_be64(raw)


def advance(layer: Layer, source: str, ms: int) -> bool:
    """Move ``source``'s watermark forward to ``ms`` (never back)."""
    current = watermark(layer, source)
    if current is not None and current >= ms:
        return False
    layer.put(keys.watermark(source), keys.be64(ms))
    return True


def observe(ctx: Ctx, event: Event) -> None:
    """An event of a watched source moves its watermark (less the allowed lateness)."""
    settings = ctx.policy.event_time
    if event.source_system not in settings.sources:
        return
    seen = min(event.event_time - settings.allowed_lateness.as_timedelta(), ctx.now)
    advance(ctx.layer, event.source_system, to_ms(seen))


def on_heartbeat(
    entries: Entries, heartbeat: SourceWatermark, now: datetime, policy: Policy
) -> list[Write]:
    """A source's heartbeat: its watermark in this partition, as writes (maybe none)."""
    if heartbeat.source_system not in policy.event_time.sources:
        return []
    layer = Layer(entries)
    advance(layer, heartbeat.source_system, to_ms(min(heartbeat.watermark, now)))
    return list(layer.writes.items())


def lagging(entries: Entries, sources: Iterable[str], cutoff_ms: int) -> list[str]:
    """The ``sources`` this partition has not yet seen past ``cutoff_ms``."""
    return [
        source
        for source in sources
        if (seen := watermark(entries, source)) is None or seen < cutoff_ms
    ]


# -- waiting answers -------------------------------------------------------------------


def arm(ctx: Ctx, request: RequestState) -> RequestState:
    """A new covering request: its answer waits for the watermarks (or max_wait)."""
    settings = ctx.policy.event_time
    if not settings.sources or not covering(request):
        return request
    request = replace(request, cutoff_wait_until=settings.max_wait.after(ctx.now))
    ctx.subject.requests[request.request_id] = request
    ctx.layer.put(_waiting_key(ctx, request), b"")
    return request


def _waiting_key(ctx: Ctx, request: RequestState) -> bytes:
    return keys.waiting(to_ms(request.received_at), ctx.subject_id, request.request_id)


def ready(ctx: Ctx, request: RequestState) -> bool:
    """Whether ``request`` may be answered now; settles its cutoff when it is reached."""
    if not request.waits_for_cutoff:
        return True
    assert request.cutoff_wait_until is not None
    behind = lagging(ctx.layer, ctx.policy.event_time.sources, to_ms(request.received_at))
    if behind and ctx.now < request.cutoff_wait_until:
        return False
    ctx.subject.requests[request.request_id] = replace(request, cutoff_settled=True, lagging=behind)
    ctx.layer.delete(_waiting_key(ctx, request))
    ctx.audit(
        rule_for(request),
        "cutoff-settled",
        controller_id=request.controller_id,
        request_id=request.request_id,
        received_at=request.received_at,
        waited="max-wait" if behind else "caught-up",
        lagging=behind,
    )
    return True


def settle_due(ctx: Ctx) -> None:
    """Answer the requests whose cutoff is reached now and whose work is done."""
    from agents.rules import requests  # late: requests uses this module

    for request in list(ctx.subject.requests.values()):
        if not request.waits_for_cutoff or not ready(ctx, request):
            continue
        request = ctx.subject.requests[request.request_id]
        if request.final or request.pending or request.awaiting_identity:
            continue
        if not requests.busy(ctx, request.request_id):
            requests.complete(ctx, request)


def lagging_reason(request: RequestState) -> str | None:
    """What a final answer says about sources that had not caught up."""
    if not request.lagging:
        return None
    verb = {
        RequestType.ERASURE: "erased",
        RequestType.RESTRICTION: "restricted",
    }.get(request.request_type, "stopped")
    return (
        "When this answer was given, these systems had not yet reported everything up "
        f"to the time of your request: {', '.join(request.lagging)}. Anything they report "
        f"later from before your request will be {verb} as well, and we will tell you."
    )


# -- late records ----------------------------------------------------------------------


def on_registered(ctx: Ctx, record: RecordState, event_time: datetime) -> None:
    """A record new to the state, dating from before a covering request's receipt."""
    if record.status is not RecordStatus.HELD:
        return
    for request in sorted(ctx.subject.requests.values(), key=lambda r: r.received_at):
        if (
            request.request_type not in COVERING
            or request.placeholder
            or request.received_at < event_time
            or record.status is not RecordStatus.HELD
        ):
            continue
        if request.request_type is RequestType.ERASURE:
            if request.status is ResponseStatus.REFUSED and not request.kept_count:
                continue  # refused as a whole by the privacy desk
            _erase_late(ctx, request, record)
        elif request.request_type is RequestType.RESTRICTION:
            if request.restriction_active:
                _restrict_late(ctx, request, record)
        elif request.workflow == OBJECTION_PROFILING and request.status is not (
            ResponseStatus.REFUSED
        ):
            _stop_late(ctx, request, record)
        record = ctx.records.get(record.key) or record


def _report_late(
    ctx: Ctx,
    rule_id: str,
    decision: str,
    request: RequestState,
    record: RecordState,
    sent: list[str],
    **more: object,
) -> None:
    """Audit how a late record was dealt with under ``request``, then book it."""
    ctx.audit(
        rule_id,
        decision,
        controller_id=request.controller_id,
        command_ids=sent,
        request_id=request.request_id,
        system=record.system,
        record_id=record.record_id,
        recorded_at=record.registered_at,
        answered=request.final,
        **more,
    )
    _late(ctx, request, record, sent)


def _late(ctx: Ctx, request: RequestState, record: RecordState, sent: list[str]) -> None:
    """Bookkeeping after a late record was handled under ``request``."""
    from agents.rules import requests  # late: requests uses this module

    request = ctx.subject.requests[request.request_id]
    settled = request.final or request.cutoff_settled
    if settled:
        ctx.notes.late_records.append((record.system, request.request_type.value))
    requests.await_commands(ctx, request.request_id, sent)
    request = ctx.subject.requests[request.request_id]
    late = sorted(set(request.late_systems) | {record.system})[:MAX_LATE_SYSTEMS]
    request = replace(request, acted=request.acted or bool(sent), late_systems=late)
    if request.final:
        request = replace(request, amending=True)
    ctx.subject.requests[request.request_id] = request
    if request.final and not request.pending and not requests.busy(ctx, request.request_id):
        requests.amend(ctx, request)


def _erase_late(ctx: Ctx, request: RequestState, record: RecordState) -> None:
    from agents.rules import commands, requests, retention  # late: they import requests

    reason = retention.keep_reason(ctx, record)
    if reason is None and record.controller_id != request.controller_id:
        reason = (
            f"Processed on behalf of {record.controller_id}, which decides on erasure; "
            "the request has been passed to it"
        )

    if reason is not None:
        requests.keep(
            ctx,
            request.request_id,
            KeptItem(
                record_id=record.record_id,
                system=record.system,
                category=record.category,
                reason=reason,
            ),
        )
        _report_late(ctx, ids.N9_ERASURE, "late-record-kept", request, record, [], reason=reason)
        return
    cid = commands.issue(
        ctx,
        action=Action.DELETE,
        system=record.system,
        controller_id=record.controller_id,
        rule_id=ids.N9_ERASURE,
        record_keys=[record.key],
        request_id=request.request_id,
    )
    sent = [cid] if cid is not None and cid in ctx.commands else []
    _report_late(ctx, ids.N9_ERASURE, "late-record-erased", request, record, sent)


def _restrict_late(ctx: Ctx, request: RequestState, record: RecordState) -> None:
    from agents.rules import rights  # late: rights imports requests

    if record.controller_id != request.controller_id:
        return  # another controller's: restriction.enforce passes it on
    if ctx.item_get(request.request_id, ITEM_COVERED, record.key) is not None:
        return
    ctx.item_put(request.request_id, ITEM_COVERED, record.key)
    sent = rights.issue_per_system(
        ctx,
        request,
        {record.system: [record.key]},
        action=Action.RESTRICT,
        rule_id=N9_RESTRICTION,
        wait=False,
    )
    _report_late(ctx, N9_RESTRICTION, "late-record-restricted", request, record, sent)


def _stop_late(ctx: Ctx, request: RequestState, record: RecordState) -> None:
    from agents.rules import rights  # late: rights imports requests

    system = ctx.policy.system(record.system)
    if system is None or not system.automated_processing:
        return
    if record.controller_id != request.controller_id:
        return
    sent = rights.issue_per_system(
        ctx,
        request,
        {record.system: [record.key]},
        action=Action.STOP_PROCESSING,
        rule_id=N9_OBJECTION_PROFILING,
        parameters=lambda _system, _keys: {"purpose": "profiling"},
        wait=False,
    )
    _report_late(ctx, N9_OBJECTION_PROFILING, "late-record-stopped", request, record, sent)
