"""The pure decision function: (subject's entries, message, now, policy) -> Decision.

``decide`` never reads a clock or does I/O. ``entries`` is a read-only view of
the store (``agents.store.layer.Entries``); the decision reads what it needs of
the subject through it and returns the writes. For each message it

1. drops a duplicate event (an ``event_id`` seen for this subject within the
   policy's dedup window): no commands, one ``duplicate-ignored`` audit entry;
2. runs the handler registered for the message's type (see ``registry.py``
   for how to add one; an event type with no handler is audited as
   ``unhandled-event``, never dropped silently);
3. fires what is due at or before ``now`` (request deadline warnings, record
   deletions, command retries and escalations, forgetting what has served its
   time), at most ``limits.DUE_BATCH`` items, runs pending jobs a page at a
   time, and answers requests whose sources have been seen past their receipt
   (or whose maximum wait is over: ``cutoff``); nothing is fired early;
4. while processing is restricted, extends the restriction to records
   registered in this decision and audits what went out (``restriction.enforce``);
5. returns the writes (``Decision.more`` when work is left for another step).

``next_due(entries, subject_id)`` gives the earliest time anything of the
subject becomes due, so the timer can send a ``DueTick`` then.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agents.rules import access as _access  # noqa: F401
from agents.rules import (
    commands,
    cutoff,
    ids,
    jobs,
    limits,
    requests,
    restriction,
    retention,
    rights,
    seen,
)
from agents.rules import consent as _consent  # noqa: F401
from agents.rules import erasure as _erasure  # noqa: F401  (registers handlers)
from agents.rules import ledger as _ledger  # noqa: F401
from agents.rules import marketing as _marketing  # noqa: F401
from agents.rules import objection as _objection  # noqa: F401
from agents.rules import records as _records  # noqa: F401
from agents.rules import rectification as _rectification  # noqa: F401
from agents.rules.context import AuditEntry, Ctx, Decision
from agents.rules.policy import Policy
from agents.rules.registry import handler_for, handles
from agents.rules.state import SubjectHeader
from agents.store import keys
from agents.store.codec import decode
from agents.store.layer import Entries, scan
from schemas.commands import CommandAck
from schemas.events import DEFAULT_CONTROLLER, Event
from schemas.internal import DueTick, ErasureReplay

Message = Event | CommandAck | DueTick | ErasureReplay

__all__ = ["AuditEntry", "Decision", "Message", "decide", "next_due"]


@handles(CommandAck)
def _on_ack(ctx: Ctx, ack: CommandAck) -> None:
    rights.note_ack(ctx, ack)  # export references (and portable records) first
    commands.on_ack(ctx, ack)


@handles(DueTick)
def _on_tick(ctx: Ctx, tick: DueTick) -> None:
    """The sweep after every message fires what is due. Before it, a reconciliation
    tick records the overdue records it names and restores any missing due entry;
    a timer tick that names records wakes those whose deletion was deferred until
    ``due_at`` (the timer saw the contract sources pass it)."""
    if tick.reconciliation:
        retention.reconcile(ctx, tick.records)
    elif tick.records:
        retention.wake_deferred(ctx, tick.due_at, tick.records)


def _sweep(ctx: Ctx) -> None:
    requests.fire_deadlines(ctx)
    due = ctx.due_items(limit=limits.DUE_BATCH)
    if len(due) >= limits.DUE_BATCH:
        ctx.more = True
    by_kind: dict[str, list[tuple[int, str]]] = {}
    for ms, kind, item in due:
        by_kind.setdefault(kind, []).append((ms, item))
    retention.fire_due(ctx, by_kind.get(keys.DUE_RECORD, []))
    commands.fire_retries(ctx, by_kind.get(keys.DUE_COMMAND, []))
    retention.forget_contracts(ctx)
    _housekeeping(ctx)
    jobs.run_pending(ctx)
    cutoff.settle_due(ctx)


def _housekeeping(ctx: Ctx) -> None:
    """Forget what has served its time: closed command ids, finished requests, dedup."""
    due = ctx.due_items(limit=limits.DUE_BATCH, ns=keys.HOUSEKEEPING)
    if len(due) >= limits.DUE_BATCH:
        ctx.more = True
    commands.forget_closed(ctx, [(ms, item) for ms, kind, item in due if kind == keys.DUE_CLOSED])
    requests.forget_finished(ctx)
    seen.expire(ctx)


def decide(entries: Entries, message: Message, now: datetime, policy: Policy) -> Decision:
    if isinstance(message, Event):
        event_time, event_ids = message.event_time, [message.event_id]
    elif isinstance(message, CommandAck):
        event_time, event_ids = message.acked_at, []
    else:
        event_time, event_ids = now, []
    ctx = Ctx.open(
        entries,
        subject_id=message.subject_id,
        policy=policy,
        now=now,
        event_time=event_time,
        event_ids_in=event_ids,
    )
    if not ctx.existed and isinstance(message, DueTick):
        return Decision([], [], [], [])
    if isinstance(message, Event):
        if seen.is_duplicate(ctx, message.event_id):
            ctx.audit(
                ids.DISPATCH,
                "duplicate-ignored",
                controller_id=message.controller_id,
                event_type=type(message).__name__,
            )
            return Decision([], [], ctx.out_audit, [])
        seen.remember(ctx, message.event_id)
        high_water = ctx.subject.high_water
        known = high_water.get(message.source_system)
        if known is None or message.event_time > known:
            high_water[message.source_system] = message.event_time
        cutoff.observe(ctx, message)  # the partition's watermark of its source
    handler = handler_for(type(message))
    if handler is None:
        ctx.audit(
            ids.DISPATCH,
            "unhandled-event",
            controller_id=getattr(message, "controller_id", DEFAULT_CONTROLLER),
            event_type=type(message).__name__,
        )
    else:
        handler(ctx, message)
    _sweep(ctx)
    # While restricted: new records are restricted too; deletions are audited.
    restriction.enforce(ctx)
    return ctx.finish()


def header(entries: Entries, subject_id: str) -> SubjectHeader | None:
    key = keys.header(subject_id)
    raw = entries.get(key)
    return None if raw is None else decode(SubjectHeader, key, raw)


def next_due(entries: Entries, subject_id: str) -> datetime | None:
    """Earliest time at which the rules act on the subject (a deletion, a retry, a
    deadline): ``decide`` on a ``DueTick`` before it changes nothing the rules
    decide. (The worker's timer may also wake a subject for housekeeping.)"""
    prefix = keys.subject_prefix(keys.DUE, subject_id)
    first = scan(entries, prefix, keys.end_of(prefix), 1)
    if not first:
        return None
    return datetime.fromtimestamp(keys.parse_due(subject_id, first[0][0])[0] / 1000, UTC)
