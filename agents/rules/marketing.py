"""Marketing suppression (N1) and objection to direct marketing (N9).

An opt-out on any channel, at any time, sends SUPPRESS_MARKETING at once to
every system the policy marks ``marketing: true`` (the command's
``parameters.channels`` lists the channels; ``all`` covers every channel).
The subject stays on the suppression list for good: the rules never remove it,
and erasure keeps it. The opt-out event's id is the command's ``request_id``,
so two opt-outs are two commands.

Re-add: while suppressed, a record registered on a marketing system, for a
marketing purpose, or of category ``purchased_list`` (a list import, a form)
triggers SUPPRESS_MARKETING again to every marketing system and to the
record's own system, with audit ``re-add-suppressed``: never a silent re-add.

``ObjectionReceived(kind=direct_marketing)`` is an opt-out on all channels
tracked as a request: it completes when every suppression is acknowledged.
Other objection kinds are for the rights workflows (see registry.py).
"""

from __future__ import annotations

from datetime import datetime

from agents.rules import commands, ids, requests
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import RecordState, Suppression
from schemas.base import Channel, DataCategory, RequestType
from schemas.commands import Action
from schemas.events import MarketingOptOutReceived, ObjectionReceived
from schemas.responses import ResponseStatus


def _merge(ctx: Ctx, channels: list[Channel], since: datetime) -> list[Channel]:
    current = ctx.subject.suppression
    merged = set(channels) | set(current.channels if current else [])
    merged_list = [Channel.ALL] if Channel.ALL in merged else sorted(merged)
    ctx.subject.suppression = Suppression(
        since=min(since, current.since) if current else since, channels=merged_list
    )
    return merged_list


def suppress(
    ctx: Ctx,
    *,
    channels: list[Channel],
    since: datetime,
    rule_id: str,
    controller_id: str,
    request_id: str | None,
    record: RecordState | None = None,
) -> list[str]:
    """Put the subject on the suppression list and tell the marketing systems.

    Returns the ids of the commands now outstanding."""
    merged = _merge(ctx, channels, since)
    targets = {s.id for s in ctx.policy.marketing_systems}
    if record is not None:
        targets.add(record.system)
    pending: list[str] = []
    for system in sorted(targets):
        cid = commands.issue(
            ctx,
            action=Action.SUPPRESS_MARKETING,
            system=system,
            controller_id=controller_id,
            rule_id=rule_id,
            record_keys=[record.key] if record is not None else [],
            request_id=request_id,
            parameters={"channels": ",".join(c.value for c in merged)},
        )
        if cid is not None:
            pending.append(cid)
    return pending


@handles(MarketingOptOutReceived)
def on_opt_out(ctx: Ctx, event: MarketingOptOutReceived) -> None:
    pending = suppress(
        ctx,
        channels=list(event.channels),
        since=event.event_time,
        rule_id=ids.N1_OPT_OUT,
        controller_id=event.controller_id,
        request_id=event.event_id,
    )
    ctx.audit(
        ids.N1_OPT_OUT,
        "marketing-suppressed",
        controller_id=event.controller_id,
        command_ids=pending,
        channels=[c.value for c in event.channels],
        systems=[s.id for s in ctx.policy.marketing_systems],
    )


def object_to_marketing(ctx: Ctx, event: ObjectionReceived) -> None:
    """An objection to direct marketing: an opt-out on all channels, tracked as a request.

    Called by ``objection.on_objection`` for objections of that kind."""
    request = requests.open_or_duplicate(
        ctx,
        request_id=event.request_id,
        request_type=RequestType.OBJECTION,
        controller_id=event.controller_id,
        event_id=event.event_id,
        rule_id=ids.DISPATCH,
    )
    if request is None:
        return
    pending = suppress(
        ctx,
        channels=[Channel.ALL],
        since=event.event_time,
        rule_id=ids.N9_OBJECTION_MARKETING,
        controller_id=event.controller_id,
        request_id=event.request_id,
    )
    ctx.audit(
        ids.N9_OBJECTION_MARKETING,
        "marketing-suppressed",
        controller_id=event.controller_id,
        command_ids=pending,
        request_id=event.request_id,
        channels=[Channel.ALL.value],
    )
    requests.await_commands(ctx, request.request_id, pending)
    request = ctx.subject.requests[request.request_id]
    if request.pending:
        # The subject hears at once that the objection took effect.
        requests.respond(ctx, request, ResponseStatus.IN_PROGRESS)
    else:
        requests.finalize(ctx, request)


def is_marketing_record(ctx: Ctx, record: RecordState, purpose_id: str) -> bool:
    system = ctx.policy.system(record.system)
    purpose = ctx.policy.purpose(purpose_id)
    return bool(
        (system is not None and system.marketing)
        or (purpose is not None and purpose.marketing)
        or record.category is DataCategory.PURCHASED_LIST
    )


def check_re_add(ctx: Ctx, record: RecordState, purpose_id: str) -> None:
    """A suppressed subject reappearing in marketing data is suppressed again (N1)."""
    suppression = ctx.subject.suppression
    if suppression is None or not is_marketing_record(ctx, record, purpose_id):
        return
    pending = suppress(
        ctx,
        channels=list(suppression.channels),
        since=suppression.since,
        rule_id=ids.N1_RE_ADD,
        controller_id=record.controller_id,
        request_id=None,
        record=record,
    )
    ctx.audit(
        ids.N1_RE_ADD,
        "re-add-suppressed",
        controller_id=record.controller_id,
        command_ids=pending,
        system=record.system,
        record_id=record.record_id,
        category=record.category.value,
        suppressed_since=suppression.since,
    )
