"""Issuing commands to downstream systems, tracking acks, retries and escalation.

* A command's id comes from ``schemas.commands.command_id`` (what it does), so
  the same decision replayed yields the same id; a command already outstanding
  is not sent twice.
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
  already closed is ignored.
* N14 guard: no command other than DELETE or SUPPRESS_MARKETING that concerns
  call recordings may go to a marketing system.
"""

from __future__ import annotations

from datetime import timedelta

from agents.rules import ids, requests
from agents.rules.context import Ctx
from agents.rules.state import (
    MAX_CLOSED_COMMAND_IDS,
    MAX_EARLY_ACKS,
    OutstandingCommand,
    RecordStatus,
    replace,
)
from schemas.base import DataCategory
from schemas.commands import AckOutcome, Action, Command, CommandAck, command_id

_CLOSING = (AckOutcome.DONE, AckOutcome.NOT_HELD)
_ALLOWED_TO_MARKETING_WITH_RECORDINGS = (Action.DELETE, Action.SUPPRESS_MARKETING)


def backoff(ctx: Ctx, attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    settings = ctx.policy.commands
    base = settings.retry_backoff_base.as_timedelta()
    cap = settings.retry_backoff_max.as_timedelta()
    factor: int = 2 ** min(attempt - 1, 30)
    return min(base * factor, cap)


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
    keys = sorted(record_keys or [])
    record_ids = sorted({ctx.records[k].record_id for k in keys if k in ctx.records})
    cats = sorted(
        set(categories or []) | {ctx.records[k].category for k in keys if k in ctx.records}
    )
    cid = command_id(
        action=action,
        system=system,
        subject_id=ctx.subject_id,
        rule_id=rule_id,
        record_ids=record_ids,
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
    tracked = OutstandingCommand(
        command=command, sent_at=ctx.now, next_retry_at=command.deadline, record_keys=keys
    )
    if action is Action.DELETE:
        for key in keys:
            ctx.records[key] = replace(
                ctx.records[key], status=RecordStatus.DELETING, command_id=cid
            )
    early = ctx.early_acks.pop(cid, None)
    if early in _CLOSING:
        ctx.commands[cid] = tracked
        _close(ctx, tracked, early, early=True)
        return None
    ctx.commands[cid] = tracked
    ctx.out_commands.append(command)
    return cid


def withdraw(ctx: Ctx, cid: str, *, rule_id: str, why: str) -> None:
    """Stop tracking (and re-sending) a command a later decision has made moot.

    The command id is remembered as closed, so a late acknowledgement of it is
    recognised rather than reported as unknown.
    """
    tracked = ctx.commands.pop(cid, None)
    if tracked is None:
        return
    _remember_closed(ctx, cid)
    ctx.audit(
        rule_id,
        "command-superseded",
        controller_id=tracked.command.controller_id,
        command_ids=[cid],
        system=tracked.command.target_system,
        action=tracked.command.action.value,
        why=why,
    )


def _remember_closed(ctx: Ctx, cid: str) -> None:
    ctx.closed_command_ids.append(cid)
    del ctx.closed_command_ids[:-MAX_CLOSED_COMMAND_IDS]


def _close(
    ctx: Ctx, tracked: OutstandingCommand, outcome: AckOutcome, *, early: bool = False
) -> None:
    command = tracked.command
    del ctx.commands[command.command_id]
    _remember_closed(ctx, command.command_id)
    deleted: list[str] = []
    if command.action is Action.DELETE:
        for key in tracked.record_keys:
            record = ctx.records.get(key)
            if record is not None and record.command_id == command.command_id:
                # Confirmed gone: nothing about it stays in the state (the audit
                # entry below is the proof).
                del ctx.records[key]
                deleted.append(record.record_id)
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
    )
    requests.on_command_closed(ctx, command.command_id)


def on_ack(ctx: Ctx, ack: CommandAck) -> None:
    tracked = ctx.commands.get(ack.command_id)
    if tracked is None:
        if ack.command_id in ctx.closed_command_ids:
            return  # redelivered ack for a command already closed
        ctx.early_acks[ack.command_id] = ack.outcome
        for extra in list(ctx.early_acks)[:-MAX_EARLY_ACKS]:
            del ctx.early_acks[extra]
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
    requests.on_command_escalated(ctx, command.command_id, command.target_system)


def fire_retries(ctx: Ctx) -> None:
    """Re-send or escalate every command whose retry time has come."""
    for cid in sorted(ctx.commands):
        tracked = ctx.commands[cid]
        if tracked.escalated or tracked.next_retry_at > ctx.now:
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
