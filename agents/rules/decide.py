"""The pure decision function: (state, message, now, policy) -> Decision.

``decide`` never reads a clock or does I/O. For each message it

1. drops a duplicate event (an ``event_id`` already processed for this
   subject): no commands, one ``duplicate-ignored`` audit entry;
2. runs the handler registered for the message's type (see ``registry.py``
   for how to add one; an event type with no handler is audited as
   ``unhandled-event``, never dropped silently);
3. fires everything whose time has come, i.e. is due at or before ``now``:
   request deadline warnings, record deletions (retention), command retries
   and escalations; nothing is fired early;
4. while processing is restricted, extends the restriction to records
   registered since and audits what went out (``restriction.enforce``);
5. returns the new state, or None when nothing is left to keep (the table
   entry is deleted).

``next_due(state)`` gives the earliest time anything in the state becomes due,
so the timer can send a ``DueTick`` then.
"""

from __future__ import annotations

from datetime import datetime

from agents.rules import access as _access  # noqa: F401
from agents.rules import commands, ids, requests, restriction, retention, rights
from agents.rules import consent as _consent  # noqa: F401
from agents.rules import erasure as _erasure  # noqa: F401  (registers handlers)
from agents.rules import marketing as _marketing  # noqa: F401
from agents.rules import objection as _objection  # noqa: F401
from agents.rules import records as _records  # noqa: F401
from agents.rules import rectification as _rectification  # noqa: F401
from agents.rules.context import AuditEntry, Ctx, Decision
from agents.rules.policy import Policy
from agents.rules.registry import handler_for, handles
from agents.rules.state import MAX_PROCESSED_EVENT_IDS, RecordStatus, SubjectState
from schemas.commands import CommandAck
from schemas.events import DEFAULT_CONTROLLER, Event
from schemas.internal import DueTick

Message = Event | CommandAck | DueTick

__all__ = ["AuditEntry", "Decision", "Message", "decide", "next_due"]


@handles(CommandAck)
def _on_ack(ctx: Ctx, ack: CommandAck) -> None:
    rights.note_ack(ctx, ack)  # export references (and portable records) first
    commands.on_ack(ctx, ack)


@handles(DueTick)
def _on_tick(ctx: Ctx, tick: DueTick) -> None:
    """Nothing of its own: the sweep after every message fires what is due."""


def _sweep(ctx: Ctx) -> None:
    requests.fire_deadlines(ctx)
    retention.fire_due(ctx)
    commands.fire_retries(ctx)
    retention.forget_contracts(ctx)


def decide(state: SubjectState | None, message: Message, now: datetime, policy: Policy) -> Decision:
    if state is not None and state.subject_id != message.subject_id:
        raise ValueError(f"state of {state.subject_id} given a message for {message.subject_id}")
    if state is None and isinstance(message, DueTick):
        return Decision(None, [], [], [])
    if isinstance(message, Event):
        event_time, event_ids = message.event_time, [message.event_id]
    elif isinstance(message, CommandAck):
        event_time, event_ids = message.acked_at, []
    else:
        event_time, event_ids = now, []
    ctx = Ctx.open(
        state,
        subject_id=message.subject_id,
        policy=policy,
        now=now,
        event_time=event_time,
        event_ids_in=event_ids,
    )
    if isinstance(message, Event):
        if message.event_id in ctx.processed_event_ids:
            ctx.audit(
                ids.DISPATCH,
                "duplicate-ignored",
                controller_id=message.controller_id,
                event_type=type(message).__name__,
            )
            return Decision(state, [], ctx.out_audit, [])
        ctx.processed_event_ids.append(message.event_id)
        del ctx.processed_event_ids[:-MAX_PROCESSED_EVENT_IDS]
        seen = ctx.high_water.get(message.source_system)
        if seen is None or message.event_time > seen:
            ctx.high_water[message.source_system] = message.event_time
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
    return Decision(
        None if ctx.is_empty else ctx.to_state(),
        ctx.out_commands,
        ctx.out_audit,
        ctx.out_responses,
    )


def next_due(state: SubjectState | None) -> datetime | None:
    """Earliest time at which ``decide`` on a ``DueTick`` would do something."""
    if state is None:
        return None
    times: list[datetime] = []
    for record in state.records.values():
        if record.status is RecordStatus.HELD and record.due_at is not None and not record.held_by:
            times.append(record.due_at)
    times += [c.next_retry_at for c in state.commands.values() if not c.escalated]
    for request in state.requests.values():
        if request.final:
            continue
        if not request.warned:
            times.append(request.warn_at)
        if not request.overdue:
            times.append(request.due_at)
    times += [c.forget_at for c in state.contracts.values() if c.forget_at is not None]
    return min(times, default=None)
