"""Issuing commands to downstream systems, tracking acks, retries and escalation.

* A command's id comes from ``schemas.commands.command_id`` (what it does,
  including the generation of each record it names), so the same decision
  replayed yields the same id, while a record registered again after its
  deletion is deleted again under a new id; a command already outstanding is
  not sent twice. A command names at most ``limits.CHUNK`` records.
* ``deadline`` = issue time + ``commands.ack_deadline``. With no ack by then
  the command is sent again (same id, ``attempt`` + 1). A FAILED ack schedules
  the next attempt after an exponential backoff:
  ``min(retry_backoff_base * 2**(attempt-1), retry_backoff_max)``.
* When attempt ``escalate_after_attempts`` has failed or timed out, the command
  is escalated: audit ``command-escalated``, no more automatic retries, and any
  request waiting on it is marked failed (visibly, with a response). A late
  DONE still closes it.
* DONE and NOT_HELD close a command; for DELETE the records it named are
  dropped from the state. An ack for a command the state does not know is
  audited (``unknown-command-ack``) and remembered briefly in case the command
  is issued afterwards (out-of-order delivery); a repeated ack for a command
  closed within the policy's ``state.closed_commands_kept_for`` is ignored.
* N14 guard: no command other than DELETE or SUPPRESS_MARKETING that concerns
  call recordings may go to a marketing system.
"""

from __future__ import annotations

from datetime import timedelta

from agents.rules import ids, limits, requests
from agents.rules.context import Ctx, closed_due, command_due
from agents.rules.state import (
    MAX_EARLY_ACKS,
    ClosedCommand,
    OutstandingCommand,
    RecordState,
    RecordStatus,
    replace,
)
from agents.store import keys
from schemas.base import DataCategory
from schemas.commands import AckOutcome, Action, Command, CommandAck, command_id

_CLOSING = (AckOutcome.DONE, AckOutcome.NOT_HELD)
_ALLOWED_TO_MARKETING_WITH_RECORDINGS = (Action.DELETE, Action.SUPPRESS_MARKETING)
WITHDRAWN = "withdrawn"


def backoff(ctx: Ctx, attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    settings = ctx.policy.commands
    base = settings.retry_backoff_base.as_timedelta()
    cap = settings.retry_backoff_max.as_timedelta()
    factor: int = 2 ** min(attempt - 1, 30)
    return min(base * factor, cap)


def command_id_for(
    ctx: Ctx,
    *,
    action: Action,
    system: str,
    rule_id: str,
    record_keys: list[str],
    request_id: str | None = None,
) -> str:
    """The id ``issue`` gives this command (the records as they are now)."""
    records = [r for k in sorted(record_keys) if (r := ctx.records.get(k)) is not None]
    return command_id(
        action=action,
        system=system,
        subject_id=ctx.subject_id,
        rule_id=rule_id,
        record_ids=sorted({r.record_id for r in records}),
        request_id=request_id,
        generations={r.record_id: r.generation for r in records if r.generation},
    )


def issue(
    ctx: Ctx,
    *,
    action: Action,
    system: str,
    controller_id: str,
    rule_id: str,
    record_keys: list[str] | None = None,
    categories: list[DataCategory] | None = None,
    request_id: str | None = None,
    parameters: dict[str, str] | None = None,
) -> str | None:
    """Send a command (once). Returns its id while it is outstanding, or None when
    nothing is awaited: it was refused (N14) or an early ack already closed it."""
    keys_ = sorted(record_keys or [])
    if len(keys_) > limits.CHUNK:
        raise ValueError(f"a command names at most {limits.CHUNK} records, not {len(keys_)}")
    records = [r for k in keys_ if (r := ctx.records.get(k)) is not None]
    record_ids = sorted({r.record_id for r in records})
    cats = sorted(set(categories or []) | {r.category for r in records})
    cid = command_id_for(
        ctx,
        action=action,
        system=system,
        rule_id=rule_id,
        record_keys=keys_,
        request_id=request_id,
    )
    if cid in ctx.commands:
        return cid
    target = ctx.policy.system(system)
    if (
        target is not None
        and target.marketing
        and DataCategory.CALL_RECORDING in cats
        and action not in _ALLOWED_TO_MARKETING_WITH_RECORDINGS
    ):
        ctx.audit(
            ids.N14_NO_MARKETING,
            "command-refused",
            controller_id=controller_id,
            system=system,
            action=action.value,
            record_ids=record_ids,
        )
        return None
    settings = ctx.policy.commands
    command = Command(
        command_id=cid,
        action=action,
        target_system=system,
        subject_id=ctx.subject_id,
        controller_id=controller_id,
        record_ids=record_ids,
        categories=cats,
        rule_id=rule_id,
        request_id=request_id,
        issued_at=ctx.now,
        deadline=ctx.now + settings.ack_deadline.as_timedelta(),
        attempt=1,
        policy_version=ctx.policy.version,
        parameters=parameters or {},
    )
    tracked = OutstandingCommand(command=command, sent_at=ctx.now, next_retry_at=command.deadline)
    if action is Action.DELETE:
        for record in records:
            ctx.records[record.key] = replace(record, status=RecordStatus.DELETING, command_id=cid)
    early = ctx.subject.early_acks.pop(cid, None)
    ctx.commands[cid] = tracked
    if early in _CLOSING:
        _close(ctx, tracked, early, early=True)
        return None
    ctx.out_commands.append(command)
    return cid


def withdraw(ctx: Ctx, cid: str, *, rule_id: str, why: str) -> None:
    """Stop tracking (and re-sending) a command a later decision has made moot.

    The command id is remembered as closed, so a late acknowledgement of it is
    recognised rather than reported as unknown.
    """
    tracked = ctx.commands.pop(cid)
    if tracked is None:
        return
    ctx.closed[cid] = ClosedCommand(closed_at=ctx.now, outcome=WITHDRAWN)
    requests.on_command_withdrawn(ctx, tracked)
    ctx.audit(
        rule_id,
        "command-superseded",
        controller_id=tracked.command.controller_id,
        command_ids=[cid],
        system=tracked.command.target_system,
        action=tracked.command.action.value,
        why=why,
    )


def _close(
    ctx: Ctx, tracked: OutstandingCommand, outcome: AckOutcome, *, early: bool = False
) -> None:
    command = tracked.command
    del ctx.commands[command.command_id]
    ctx.closed[command.command_id] = ClosedCommand(closed_at=ctx.now, outcome=outcome.value)
    deleted: list[str] = []
    again: list[RecordState] = []
    if command.action is Action.DELETE:
        for key in tracked.record_keys:
            record = ctx.records.get(key)
            if record is not None and record.command_id == command.command_id:
                # Confirmed gone: nothing about it stays in the state (the audit
                # entry below is the proof)...
                del ctx.records[key]
                deleted.append(record.record_id)
                if record.next_generation is not None:
                    # ...unless it was registered again meanwhile: held again.
                    again.append(_reborn(ctx, record))
    ctx.audit(
        command.rule_id,
        "command-completed",
        controller_id=command.controller_id,
        command_ids=[command.command_id],
        system=command.target_system,
        action=command.action.value,
        outcome=outcome.value,
        attempt=command.attempt,
        record_ids=deleted,
        **({"early_ack": "true"} if early else {}),
        **({"request_id": command.request_id} if command.request_id else {}),
    )
    for record in again:
        ctx.audit(
            record.rule_id or ids.N3_REGISTER,
            "record-held-again",
            controller_id=record.controller_id,
            system=record.system,
            record_id=record.record_id,
            due_at=record.due_at or "while-contract-active",
        )
    requests.on_command_closed(ctx, tracked)


def _reborn(ctx: Ctx, record: RecordState) -> RecordState:
    from agents.rules import retention  # late: retention issues commands

    fresh = replace(
        record,
        generation=record.next_generation or "",
        registered_at=record.reregistered_at or ctx.event_time,
        status=RecordStatus.HELD,
        command_id=None,
        held_by=[],
        rule_id=None,
        due_at=None,
        next_generation=None,
        reregistered_at=None,
    )
    fresh = retention.schedule(ctx, fresh)
    ctx.records[fresh.key] = fresh
    ctx.registered.append(fresh.key)
    return fresh


def on_ack(ctx: Ctx, ack: CommandAck) -> None:
    tracked = ctx.commands.get(ack.command_id)
    if tracked is None:
        if ack.command_id in ctx.closed:
            return  # redelivered ack for a command already closed
        early = ctx.subject.early_acks
        early[ack.command_id] = ack.outcome
        for extra in list(early)[:-MAX_EARLY_ACKS]:
            del early[extra]
        ctx.audit(
            ids.COMMAND_DELIVERY,
            "unknown-command-ack",
            command_ids=[ack.command_id],
            system=ack.system,
            outcome=ack.outcome.value,
        )
        return
    command = tracked.command
    if ack.system != command.target_system:
        ctx.audit(
            command.rule_id,
            "ack-system-mismatch",
            controller_id=command.controller_id,
            command_ids=[command.command_id],
            system=command.target_system,
            ack_system=ack.system,
        )
        return
    ctx.notes.acks.append(
        (
            ack.system,
            command.action.value,
            ack.outcome.value,
            (ack.acked_at - tracked.sent_at).total_seconds(),
        )
    )
    if ack.outcome in _CLOSING:
        _close(ctx, tracked, ack.outcome)
        return
    ctx.audit(
        command.rule_id,
        "command-failed",
        controller_id=command.controller_id,
        command_ids=[command.command_id],
        system=command.target_system,
        attempt=command.attempt,
    )
    if tracked.escalated:
        return
    if command.attempt >= ctx.policy.commands.escalate_after_attempts:
        _escalate(ctx, tracked)
    else:
        ctx.commands[command.command_id] = replace(
            tracked, next_retry_at=ctx.now + backoff(ctx, command.attempt)
        )


def _escalate(ctx: Ctx, tracked: OutstandingCommand) -> None:
    command = tracked.command
    ctx.commands[command.command_id] = replace(tracked, escalated=True)
    ctx.audit(
        command.rule_id,
        "command-escalated",
        controller_id=command.controller_id,
        command_ids=[command.command_id],
        system=command.target_system,
        action=command.action.value,
        attempts=command.attempt,
    )
    requests.on_command_escalated(ctx, tracked)


def fire_retries(ctx: Ctx, due: list[tuple[int, str]]) -> None:
    """Re-send or escalate the commands whose retry time has come (from the due index)."""
    for ms, cid in sorted(due, key=lambda item: item[1]):
        tracked = ctx.commands.get(cid)
        if command_due(tracked) != ms or tracked is None:
            ctx.drop_due(ms, keys.DUE_COMMAND, cid)
            continue
        command = tracked.command
        if command.attempt >= ctx.policy.commands.escalate_after_attempts:
            _escalate(ctx, tracked)
            continue
        again = replace(
            command,
            attempt=command.attempt + 1,
            issued_at=ctx.now,
            deadline=ctx.now + ctx.policy.commands.ack_deadline.as_timedelta(),
        )
        ctx.commands[cid] = replace(
            tracked, command=again, sent_at=ctx.now, next_retry_at=again.deadline
        )
        ctx.out_commands.append(again)
        ctx.audit(
            command.rule_id,
            "command-retried",
            controller_id=command.controller_id,
            command_ids=[cid],
            system=command.target_system,
            attempt=again.attempt,
        )


def forget_closed(ctx: Ctx, due: list[tuple[int, str]]) -> None:
    """Closed command ids leave the state once kept for the policy's period."""
    keep = ctx.policy.state.closed_commands_kept_for.as_timedelta()
    for ms, cid in due:
        if closed_due(ctx.closed.get(cid), keep) == ms:
            ctx.closed.pop(cid)
        ctx.drop_due(ms, keys.DUE_CLOSED, cid, keys.HOUSEKEEPING)
