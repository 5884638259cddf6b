"""The erasure ledger, and erasures re-applied after a restore (``N9.erasure-replay``).

A downstream system restored from a backup taken before a deletion holds the
deleted data again. So every DELETE a system confirms (DONE or NOT_HELD: the
backup may still hold what the system no longer did) becomes a ledger entry:
record ids, system, command id, rule, request and time, no personal data
values. The worker writes entries to the erasure-ledger topic, kept as long as
the longest backup retention in the policy (docs/own-data.md).

After a restore, the replayer (``agents/runtime/replayer.py``) reads the
ledger entries of the restored system since the backup was taken and sends
each subject an ``ErasureReplay``. Here the subject's worker sends the DELETE
again under its original command id, tracked like any command (retried,
escalated, closed by the ack), marked ``replay-of: <restore id>`` so that the
system carries it out again even if its idempotency store remembers the id,
and audits ``erasure-replayed``. Its confirmation writes the ledger entry again
with the new time, so a later restore is covered too.
"""

from __future__ import annotations

from agents.rules import ids
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import OutstandingCommand
from schemas.commands import Action, Command
from schemas.internal import ErasureLedgerEntry, ErasureReplay

# Command parameter naming the restore a re-sent DELETE belongs to.
REPLAY_OF = "replay-of"


def record(ctx: Ctx, command: Command) -> None:
    """A DELETE was confirmed: remember what it erased from which system."""
    ctx.out_ledger.append(
        ErasureLedgerEntry(
            command_id=command.command_id,
            system=command.target_system,
            subject_id=command.subject_id,
            controller_id=command.controller_id,
            record_ids=command.record_ids,
            categories=command.categories,
            rule_id=command.rule_id,
            request_id=command.request_id,
            erased_at=ctx.now,
        )
    )


def ledger_key(system: str, command_id: str) -> bytes:
    """One ledger entry per system and command (the topic is compacted on it)."""
    return f"{system}/{command_id}".encode()


@handles(ErasureReplay)
def on_replay(ctx: Ctx, replay: ErasureReplay) -> None:
    cid = replay.command_id
    resent = ctx.commands.get(cid) is None
    if resent:
        settings = ctx.policy.commands
        command = Command(
            command_id=cid,
            action=Action.DELETE,
            target_system=replay.system,
            subject_id=ctx.subject_id,
            controller_id=replay.controller_id,
            record_ids=replay.record_ids,
            categories=replay.categories,
            rule_id=replay.rule_id,
            request_id=replay.request_id,
            issued_at=ctx.now,
            deadline=ctx.now + settings.ack_deadline.as_timedelta(),
            attempt=1,
            policy_version=ctx.policy.version,
            parameters={REPLAY_OF: replay.restore_id},
        )
        # Open again: its ack closes it (and writes the ledger entry anew).
        ctx.closed.pop(cid)
        ctx.commands[cid] = OutstandingCommand(
            command=command, sent_at=ctx.now, next_retry_at=command.deadline
        )
        ctx.out_commands.append(command)
    ctx.audit(
        ids.N9_ERASURE_REPLAY,
        "erasure-replayed" if resent else "erasure-replay-in-flight",
        controller_id=replay.controller_id,
        command_ids=[cid],
        system=replay.system,
        action=Action.DELETE.value,
        restore_id=replay.restore_id,
        backup_taken_at=replay.backup_taken_at.isoformat(),
        erased_at=replay.erased_at.isoformat(),
        original_rule=replay.rule_id,
        record_ids=replay.record_ids,
        **({"request_id": replay.request_id} if replay.request_id else {}),
    )
