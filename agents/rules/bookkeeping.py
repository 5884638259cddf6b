"""What ``Ctx.finish`` does: keep the indexes in step and order the writes.

For every record, command and closed command a decision wrote, the subject's
due indexes move with the entry's due time, the counters and the record tally
follow, and the metrics entries (``o``, ``a``) are kept. Two due indexes:

* ``n``: when the rules act (record deletions, command retries, request
  deadlines, contract forgetting, pending jobs: the header's own item);
* ``m``: housekeeping (closed command ids, dedup buckets and finished requests
  that have served their time). Housekeeping does not wake a subject on its
  own schedule: it is done whenever the subject is decided, and the subject is
  woken once, when all its housekeeping is due (``housekeep_until``).

The subject's timer entry (``d``) is the earlier of its first ``n`` item and
``housekeep_until``. The header is written last but for the seen-event
entries, so a crash that loses the tail of the writes never marks an event
seen whose effects are lost (docs/state.md).
"""

from __future__ import annotations

import json
from datetime import datetime

from agents.rules.context import Ctx, closed_due, tally_change, to_ms
from agents.rules.state import RequestState, SubjectHeader
from agents.store import keys
from agents.store.codec import encode
from agents.store.layer import Write, scan
from schemas.responses import ResponseStatus


def finish(ctx: Ctx) -> list[Write]:
    h = ctx.subject
    sid = ctx.subject_id
    for _name, before, after in ctx.records.changes():
        h.records += (after is not None) - (before is not None)
        if before != after:
            tally_change(h.tally, before, after)
    for name, cbefore, cafter in ctx.commands.changes():
        h.commands += (cafter is not None) - (cbefore is not None)
        outstanding = keys.keyed(keys.OUTSTANDING, sid, name)
        if cafter is None:
            if cbefore is not None:
                ctx.layer.delete(outstanding)
        elif cbefore is None or cbefore.sent_at != cafter.sent_at:
            value = f"{cafter.command.target_system}|{to_ms(cafter.sent_at)}"
            ctx.layer.put(outstanding, value.encode())
    keep = ctx.policy.state.closed_commands_kept_for.as_timedelta()
    latest: list[int] = []
    for _name, xbefore, xafter in ctx.closed.changes():
        h.closed += (xafter is not None) - (xbefore is not None)
        new = closed_due(xafter, keep)
        if new is not None:
            latest.append(new)
    _open_requests(ctx)
    rule_due = _header_due(ctx)
    if rule_due != h.due_ms:
        _move(ctx, keys.DUE_HEADER, "", h.due_ms, rule_due)
        h.due_ms = rule_due
    house = _header_housekeeping(ctx)
    house_due = min(house, default=None)
    if house_due != h.housekeeping_ms:
        _move(ctx, keys.DUE_HEADER, "", h.housekeeping_ms, house_due, keys.HOUSEKEEPING)
        h.housekeeping_ms = house_due
    latest += house
    if latest:
        h.housekeep_until = max([*latest, h.housekeep_until or 0])
    elif h.housekeep_until is not None and _first(ctx, keys.HOUSEKEEPING) is None:
        h.housekeep_until = None
    _timer(ctx)
    return _ordered(ctx, h)


def _move(
    ctx: Ctx, kind: str, item: str, old: int | None, new: int | None, ns: bytes = keys.DUE
) -> None:
    if old == new:
        return
    if old is not None:
        ctx.layer.delete(keys.due(ctx.subject_id, old, kind, item, ns))
    if new is not None:
        ctx.layer.put(keys.due(ctx.subject_id, new, kind, item, ns), b"")


def _first(ctx: Ctx, ns: bytes) -> int | None:
    prefix = keys.subject_prefix(ns, ctx.subject_id)
    first = scan(ctx.layer, prefix, keys.end_of(prefix), 1)
    return keys.parse_due(ctx.subject_id, first[0][0])[0] if first else None


def _counted_open(request: RequestState | None) -> bool:
    # Evidence held before its request arrives is not an open request, and the
    # legal clock of a request awaiting identity has not started.
    return (
        request is not None
        and not request.final
        and not request.placeholder
        and request.status is not ResponseStatus.AWAITING_IDENTITY
    )


def _open_requests(ctx: Ctx) -> None:
    before = ctx.requests_before
    after = ctx.subject.requests
    for request_id in set(before) | set(after):
        old, new = before.get(request_id), after.get(request_id)
        key = keys.keyed(keys.OPEN_REQUEST, ctx.subject_id, request_id)
        if not _counted_open(new):
            if _counted_open(old):
                ctx.layer.delete(key)
            continue
        assert new is not None
        if not _counted_open(old) or old is None or old.due_at != new.due_at:
            value = json.dumps([new.request_type.value, to_ms(new.due_at)]).encode()
            ctx.layer.put(key, value)


def _header_due(ctx: Ctx) -> int | None:
    """When the rules next act on the header: request deadlines, contract
    forgetting, and now while a job has pages left."""
    h = ctx.subject
    times: list[datetime] = []
    if h.jobs:
        times.append(ctx.now)
    for request in h.requests.values():
        if request.waits_for_cutoff and request.cutoff_wait_until is not None:
            times.append(request.cutoff_wait_until)  # answered at the latest then
        if request.final:
            continue
        if not request.warned:
            times.append(request.warn_at)
        if not request.overdue:
            times.append(request.due_at)
    times += [c.forget_at for c in h.contracts.values() if c.forget_at is not None]
    return min((to_ms(t) for t in times), default=None)


def _header_housekeeping(ctx: Ctx) -> list[int]:
    """When the header's bookkeeping expires: finished requests, dedup buckets."""
    h = ctx.subject
    keep = ctx.policy.state.finished_requests_kept_for
    times = [to_ms(keep.after(r.closed_at or ctx.now)) for r in h.requests.values() if r.final]
    span = ctx.policy.state.dedup_bucket + ctx.policy.state.dedup_window.as_timedelta()
    span_ms = int(span.total_seconds() * 1000)
    times += [bucket + span_ms for bucket in h.seen_buckets]
    return times


def _timer(ctx: Ctx) -> None:
    h = ctx.subject
    candidates = [t for t in (_first(ctx, keys.DUE), h.housekeep_until) if t is not None]
    earliest = min(candidates, default=None)
    if earliest == h.timer_ms:
        return
    if h.timer_ms is not None:
        ctx.layer.delete(keys.timer(h.timer_ms, ctx.subject_id))
    if earliest is not None:
        ctx.layer.put(keys.timer(earliest, ctx.subject_id), b"")
    h.timer_ms = earliest


def holds_nothing(h: SubjectHeader) -> bool:
    """Nothing about the subject is left but bookkeeping (dedup, closed command ids)."""
    return not (
        h.records
        or h.commands
        or h.contracts
        or h.suppression
        or h.holds
        or h.consents
        or h.requests
        or h.restricted
        or h.early_acks
        or h.jobs
    )


def _ordered(ctx: Ctx, h: SubjectHeader) -> list[Write]:
    body: list[Write] = []
    seen: list[Write] = []
    for key, value in ctx.layer.writes.items():
        if value is None and ctx.layer.base.get(key) is None:
            continue  # written and deleted again within the decision: nothing to store
        (seen if key[:1] == keys.SEEN else body).append((key, value))
    if holds_nothing(h) and not h.closed and not h.seen_buckets and h.timer_ms is None:
        # Nothing left, not even bookkeeping: the subject leaves the store.
        header: Write | None = (ctx.header_key, None) if ctx.existed else None
    else:
        raw = encode(h)
        header = None if raw == ctx.header_raw else (ctx.header_key, raw)
    return body + ([header] if header is not None else []) + seen
