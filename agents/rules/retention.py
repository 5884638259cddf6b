"""Retention: when each record becomes due, legal holds, and deletion (N6, N7).

How a record's due time is chosen (rule kinds are described in ``policy.py``;
the record's controller's overrides apply, N2):

1. A ``fixed`` rule for its category (call recordings, N7): recorded time +
   ``keep_for``, whatever the contract state.
Only contracts with the record's own controller count (N2).

2. Not needed for a legal obligation and tied to a contract that has ended:
   that contract's end + ``contract_end.keep_for`` (N6: deleted at contract end).
3. Any contract of the subject active: no due time (kept during the contract).
4. The subject's contracts have all ended and the record belongs to that
   relationship (tied to a contract, or recorded before the last end):
   legal-obligation categories at last end + ``legal_obligation.keep_for``
   (7 calendar years; 29 Feb -> 28 Feb), others at last end +
   ``contract_end.keep_for``.
5. Otherwise (no contract ever, or recorded after the relationship ended):
   recorded time + ``default.keep_for``.

Due times are recomputed whenever contracts change, so a new contract before
the 7 years run out clears them and the next contract end sets them again; a
subject's records are recomputed a page at a time (``jobs``), and a record is
checked again when its due time comes, so a due time not yet recomputed never
deletes early.

At due time a DELETE goes to the record's system (one command per system,
controller and rule, of at most ``limits.CHUNK`` records), unless a legal hold
covers the record: then an audit entry ``deletion-held`` names the holds, once,
and nothing is scheduled for it until a hold is released, when it is deleted at
once if still overdue. Due records are found in the subject's due index, not
by looking at every record.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from agents.rules import commands, cutoff, ids, jobs, limits
from agents.rules.context import Ctx, record_due, to_ms
from agents.rules.policy import RetentionRule, RuleKind
from agents.rules.registry import handles
from agents.rules.state import ContractState, Hold, Job, RecordState, RecordStatus, replace
from agents.store import keys
from schemas.commands import Action
from schemas.events import ContractEnded, ContractStarted, LegalHoldPlaced, LegalHoldReleased

RESCHEDULE = "reschedule"
HOLD_PLACED = "hold-placed"
HOLD_RELEASED = "hold-released"


def _rule(ctx: Ctx, controller_id: str, kind: RuleKind) -> RetentionRule:
    rule = ctx.policy.rule_for(controller_id, kind)
    if rule is None:  # load_policy guarantees one of each non-fixed kind
        raise LookupError(f"policy has no {kind.value} rule")
    return rule


def compute_due(ctx: Ctx, record: RecordState) -> tuple[str, datetime | None]:
    """(governing rule id, due time or None) for ``record`` in the current state."""
    controller = record.controller_id
    fixed = ctx.policy.rule_for(controller, RuleKind.FIXED, record.category)
    if fixed is not None:
        return fixed.id, fixed.keep_for.after(record.registered_at)
    legal = ctx.policy.is_legal_obligation(record.category)
    at_end = _rule(ctx, controller, RuleKind.CONTRACT_END)
    contracts = ctx.subject.contracts
    own = contracts.get(record.contract_id) if record.contract_id else None
    if not legal and own is not None and own.ended_at is not None:
        return at_end.id, at_end.keep_for.after(own.ended_at)
    relationship = _rule(ctx, controller, RuleKind.LEGAL_OBLIGATION) if legal else at_end
    # Only the record's own controller's contracts count (N2: a client's data is
    # not governed by the subject's contracts with SmartComms, or vice versa).
    mine = [c for c in contracts.values() if c.controller_id == controller]
    if any(c.active for c in mine):
        return relationship.id, None
    ends = [c.ended_at for c in mine if c.ended_at is not None]
    if ends and (record.contract_id is not None or record.registered_at <= max(ends)):
        return relationship.id, relationship.keep_for.after(max(ends))
    default = _rule(ctx, controller, RuleKind.DEFAULT)
    return default.id, default.keep_for.after(record.registered_at)


def schedule(ctx: Ctx, record: RecordState) -> RecordState:
    """``record`` with its rule and due time brought up to date (HELD records only)."""
    if record.status is not RecordStatus.HELD:
        return record
    rule_id, due = compute_due(ctx, record)
    if (rule_id, due) == (record.rule_id, record.due_at):
        return record
    return replace(record, rule_id=rule_id, due_at=due)


def _reschedule_page(ctx: Ctx, job: Job) -> tuple[Job | None, list[str], list[str]]:
    records, last = jobs.page(ctx, job)
    timed: list[str] = []
    cleared: list[str] = []
    for record in records:
        updated = schedule(ctx, record)
        if updated is not record:
            ctx.records[record.key] = updated
            (timed if updated.due_at is not None else cleared).append(updated.record_id)
    return (None if last else jobs.advance(job, records)), timed, cleared


@jobs.step(RESCHEDULE)
def _continue_reschedule(ctx: Ctx, job: Job) -> Job | None:
    following, timed, cleared = _reschedule_page(ctx, job)
    if timed or cleared:
        ctx.audit(
            ids.N6_CONTRACT,
            "records-rescheduled",
            page=job.page + 1,
            records_scheduled=timed,
            records_unscheduled=cleared,
        )
    return following


def reschedule_all(ctx: Ctx) -> tuple[list[str], list[str]]:
    """Recompute the records' due times: the first page now (every record, when they
    fit one), the rest in following steps. Returns (ids now due at a time, ids now
    unscheduled) of this page."""
    jobs.cancel(ctx, RESCHEDULE)  # a newer contract change covers every record again
    following, timed, cleared = _reschedule_page(ctx, Job(kind=RESCHEDULE, ref="all"))
    if following is not None:
        ctx.subject.jobs.append(following)
        ctx.more = True
    return timed, cleared


def blocking_holds(ctx: Ctx, record: RecordState) -> list[Hold]:
    return sorted(
        (h for h in ctx.subject.holds.values() if h.covers(record)), key=lambda h: h.hold_id
    )


def keep_reason(ctx: Ctx, record: RecordState) -> str | None:
    """Why ``record`` may not be erased now (N10), or None if it may."""
    holds = blocking_holds(ctx, record)
    if holds:
        h = holds[0]
        return f"Kept under legal hold {h.hold_id} (case {h.case_reference}): {h.reason}"
    legal = ctx.policy.rule_for(record.controller_id, RuleKind.LEGAL_OBLIGATION)
    if legal is not None and record.rule_id == legal.id and record.status is RecordStatus.HELD:
        until = (
            f"kept until {record.due_at.date().isoformat()}"
            if record.due_at is not None
            else "kept while a contract is active and for the period after it ends"
        )
        return f"{legal.id}: {legal.description}; {until}"
    return None


def _clear_deferral(ctx: Ctx, due_ms: int, record_key: str) -> bool:
    """Drop the record's deferral index entry, if it has one (read first: a
    deletion that was never deferred writes nothing more)."""
    key = keys.deferred(due_ms, ctx.subject_id, record_key)
    if ctx.layer.get(key) is None:
        return False
    ctx.layer.delete(key)
    return True


def wake_deferred(ctx: Ctx, due_at: datetime, record_keys: list[str]) -> None:
    """The timer found the contract sources past ``due_at``, where the named records'
    deletions were deferred: each is due again at its own time now (and so fired by
    the sweep that follows), checked afresh. One whose sources are still behind (a
    watermark moved back with a replay) stays deferred, its entry kept."""
    due_ms = to_ms(due_at)
    sources = ctx.policy.event_time.contract_sources
    if cutoff.lagging(ctx.layer, sources, due_ms):
        return
    for key in record_keys:
        if not _clear_deferral(ctx, due_ms, key):
            continue
        record = ctx.records.get(key)
        if record is None or record.status is not RecordStatus.HELD:
            continue  # deleted or erased meanwhile: only the entry was left
        current = schedule(ctx, record)
        if current is not record:
            ctx.records[key] = current


def reconcile(ctx: Ctx, record_keys: list[str]) -> None:
    """The standing reconciliation (``agents.runtime.reconcile``) found the named
    records kept past their time with no reason on record: say so in the trail
    (``overdue-found``, with how late each is), and put back the due-index entry
    of any that has none, audited ``due-index-restored``: the sweep that follows
    fires them (one whose entry is there was only waiting for a tick)."""
    found: list[str] = []
    due_at: list[str] = []
    restored: list[str] = []
    for key in record_keys:
        record = ctx.records.get(key)
        due_ms = record_due(record)
        if record is None or due_ms is None or due_ms > to_ms(ctx.now):
            continue  # dealt with meanwhile: deleted, held, not due after all
        found.append(record.record_id)
        due_at.append(record.due_at.isoformat() if record.due_at else "")
        entry = keys.due(ctx.subject_id, due_ms, keys.DUE_RECORD, key)
        if ctx.layer.get(entry) is None:
            ctx.layer.put(entry, b"")
            restored.append(record.record_id)
    if found:
        ctx.audit(ids.RECONCILIATION, "overdue-found", record_ids=found, due_at=due_at)
    if restored:
        ctx.audit(ids.RECONCILIATION, "due-index-restored", record_ids=restored)


def fire_due(ctx: Ctx, due: list[tuple[int, str]]) -> None:
    """Issue DELETE for the due records (from the due index) that are not held."""
    # Records are grouped by their due time too: a decision replayed later (a worker
    # killed before storing it) finds more records due, and grouping those with the
    # first would name the first records in a DELETE of another id. Records due at
    # the same time (a contract's end) still go in one command.
    groups: dict[tuple[str, str, str, int], list[str]] = defaultdict(list)
    for ms, key in sorted(due, key=lambda item: item[1]):
        record = ctx.records.get(key)
        if record is None or record_due(record) != ms:
            ctx.drop_due(ms, keys.DUE_RECORD, key)  # the index entry outlived its reason
            continue
        # Checked again now: a contract change may not have reached this record yet.
        current = schedule(ctx, record)
        if current is not record:
            ctx.records[key] = current
            if current.due_at is None or current.due_at > ctx.now:
                continue
            record = current
        holds = blocking_holds(ctx, record)
        if holds:
            hold_ids = [h.hold_id for h in holds]
            ctx.records[key] = replace(record, held_by=hold_ids)
            for hold_id in hold_ids:
                ctx.mark_held(hold_id, key)
            ctx.audit(
                record.rule_id or ids.N7_LEGAL_HOLD,
                "deletion-held",
                controller_id=record.controller_id,
                record_id=record.record_id,
                system=record.system,
                category=record.category.value,
                due_at=record.due_at,
                hold_ids=hold_ids,
                case_references=[h.case_reference for h in holds],
            )
            continue
        if _waits_for_sources(ctx, record):
            continue
        due_ms = to_ms(record.due_at) if record.due_at is not None else ms
        groups[(record.system, record.controller_id, record.rule_id or "", due_ms)].append(key)
    for (system, controller_id, rule_id, _due), group in sorted(groups.items()):
        for at in range(0, len(group), limits.CHUNK):
            chunk = group[at : at + limits.CHUNK]
            records = [ctx.records[k] for k in chunk]
            due_at = min(r.due_at or ctx.now for r in records)
            cid = commands.issue(
                ctx,
                action=Action.DELETE,
                system=system,
                controller_id=controller_id,
                rule_id=rule_id,
                record_keys=chunk,
            )
            ctx.audit(
                rule_id,
                "retention-delete",
                controller_id=controller_id,
                command_ids=[cid] if cid else [],
                system=system,
                record_ids=[r.record_id for r in records],
                due_at=due_at,
            )


def _waits_for_sources(ctx: Ctx, record: RecordState) -> bool:
    """Defer a deletion that rests on the absence of a contract until the systems that
    report contracts (``event_time.contract_sources``) have been seen past its due
    time (N9 event time), or ``event_time.max_wait`` after it.

    Only a ``fixed`` rule's deletion (call recordings) holds whatever the contracts;
    the others hold because no contract was known to be running at the due time. A
    ``ContractStarted`` from before that time still unread on the billing topic (a
    lagging worker, a system reporting late) would have kept the record, so the
    record waits, due again at the maximum wait: then it is checked afresh (its due
    time recomputed, a contract reported meanwhile keeping it) and deleted if still
    due, whatever the sources. The record's due time moves, so replays decide the
    same; audited ``deletion-deferred`` with the sources not seen that far. The
    deferral is indexed by its due time (``f`` keys), so the worker's timer wakes the
    record as soon as every contract source has passed that time
    (``wake_deferred``), not at the maximum wait.
    """
    settings = ctx.policy.event_time
    if not settings.contract_sources or record.due_at is None:
        return False
    fixed = ctx.policy.rule_for(record.controller_id, RuleKind.FIXED, record.category)
    if fixed is not None and fixed.id == record.rule_id:
        return False
    until = record.due_at + settings.max_wait.as_timedelta()
    due_ms = to_ms(record.due_at)
    behind = cutoff.lagging(ctx.layer, settings.contract_sources, due_ms) if ctx.now < until else []
    if not behind:
        _clear_deferral(ctx, due_ms, record.key)  # it goes now: no wake needed
        return False
    ctx.records[record.key] = replace(record, due_at=until)
    # The timer wakes it as soon as the sources pass its due time (wake_deferred).
    ctx.layer.put(keys.deferred(due_ms, ctx.subject_id, record.key), b"")
    ctx.audit(
        record.rule_id or ids.N7_LEGAL_HOLD,
        "deletion-deferred",
        controller_id=record.controller_id,
        record_id=record.record_id,
        system=record.system,
        due_at=record.due_at,
        until=until,
        lagging=behind,
    )
    return True


def forget_contracts(ctx: Ctx) -> None:
    """Drop ended contracts whose legal-obligation period is over."""
    contracts = ctx.subject.contracts
    for contract_id, contract in list(contracts.items()):
        if contract.forget_at is not None and contract.forget_at <= ctx.now:
            del contracts[contract_id]


@handles(ContractStarted)
def on_contract_started(ctx: Ctx, event: ContractStarted) -> None:
    contracts = ctx.subject.contracts
    contract = contracts.get(event.contract_id)
    if contract is not None and contract.started_at is not None:
        return  # already known started (a second publisher's copy)
    late = contract is not None and contract.ended_at is not None
    if contract is None:
        contract = ContractState(contract_id=event.contract_id, controller_id=event.controller_id)
    contracts[event.contract_id] = replace(contract, started_at=event.event_time)
    timed, cleared = reschedule_all(ctx)
    ctx.audit(
        ids.N6_CONTRACT,
        "contract-started-after-end" if late else "contract-started",
        controller_id=event.controller_id,
        contract_id=event.contract_id,
        records_unscheduled=cleared,
        records_rescheduled=timed,
    )


@handles(ContractEnded)
def on_contract_ended(ctx: Ctx, event: ContractEnded) -> None:
    contracts = ctx.subject.contracts
    contract = contracts.get(event.contract_id) or ContractState(
        contract_id=event.contract_id, controller_id=event.controller_id
    )
    if contract.ended_at is not None:
        return
    legal = _rule(ctx, contract.controller_id, RuleKind.LEGAL_OBLIGATION)
    # Remembered until its records' legal-obligation period is over, plus the wait a
    # deletion may take for the contract sources (``_waits_for_sources``): forgotten
    # earlier, a deferred record would fall to the no-contract rule instead.
    event_time = ctx.policy.event_time
    linger = event_time.max_wait.as_timedelta() if event_time.contract_sources else timedelta(0)
    contracts[event.contract_id] = replace(
        contract,
        ended_at=event.event_time,
        forget_at=legal.keep_for.after(event.event_time) + linger,
    )
    timed, cleared = reschedule_all(ctx)
    ctx.audit(
        ids.N6_CONTRACT,
        "contract-ended",
        controller_id=event.controller_id,
        contract_id=event.contract_id,
        started=contract.started_at is not None,
        any_contract_active=ctx.any_contract_active,
        records_scheduled=timed,
        records_unscheduled=cleared,
    )


def _hold_page(ctx: Ctx, job: Job) -> tuple[Job | None, list[str], list[str]]:
    hold = ctx.subject.holds.get(job.ref)
    records, last = jobs.page(ctx, job)
    covered = [r for r in records if hold is not None and hold.covers(r)]
    held = [r.record_id for r in covered if r.status is RecordStatus.HELD]
    deleting = [r.record_id for r in covered if r.status is RecordStatus.DELETING]
    return (None if last or hold is None else jobs.advance(job, records)), held, deleting


@jobs.step(HOLD_PLACED)
def _continue_hold_placed(ctx: Ctx, job: Job) -> Job | None:
    following, held, deleting = _hold_page(ctx, job)
    hold = ctx.subject.holds.get(job.ref)
    if hold is not None and (held or deleting):
        ctx.audit(
            ids.N7_LEGAL_HOLD,
            "hold-placed",
            controller_id=hold.controller_id,
            hold_id=hold.hold_id,
            page=job.page + 1,
            records_held=held,
            records_already_deleting=deleting,
        )
    return following


@handles(LegalHoldPlaced)
def on_hold_placed(ctx: Ctx, event: LegalHoldPlaced) -> None:
    hold = Hold(
        hold_id=event.hold_id,
        reason=event.reason,
        case_reference=event.case_reference,
        categories=event.categories,
        record_ids=event.record_ids,
        placed_at=event.event_time,
        controller_id=event.controller_id,
    )
    ctx.subject.holds[hold.hold_id] = hold
    jobs.cancel(ctx, HOLD_PLACED, hold.hold_id)
    following, held, deleting = _hold_page(ctx, Job(kind=HOLD_PLACED, ref=hold.hold_id))
    if following is not None:
        ctx.subject.jobs.append(following)
        ctx.more = True
    ctx.audit(
        ids.N7_LEGAL_HOLD,
        "hold-placed",
        controller_id=event.controller_id,
        hold_id=hold.hold_id,
        case_reference=hold.case_reference,
        categories=[c.value for c in hold.categories] or ["all"],
        records_held=held,
        # A DELETE already sent cannot be recalled; say so rather than pretend.
        records_already_deleting=deleting,
    )


def _release_page(ctx: Ctx, hold_id: str) -> bool:
    """Clear a page of the hold's records; True when none are left."""
    limit = max(1, min(limits.PAGE, ctx.budget))
    held = ctx.held_records(hold_id, limit=limit + 1)
    for key in held[:limit]:
        ctx.unmark_held(hold_id, key)
        record = ctx.records.get(key)
        if record is not None and hold_id in record.held_by:
            ctx.records[key] = replace(record, held_by=[h for h in record.held_by if h != hold_id])
    ctx.budget -= len(held[:limit])
    return len(held) <= limit


@jobs.step(HOLD_RELEASED)
def _continue_release(ctx: Ctx, job: Job) -> Job | None:
    return None if _release_page(ctx, job.ref) else replace(job, page=job.page + 1)


@handles(LegalHoldReleased)
def on_hold_released(ctx: Ctx, event: LegalHoldReleased) -> None:
    hold = ctx.subject.holds.pop(event.hold_id, None)
    if hold is None:
        ctx.audit(
            ids.N7_LEGAL_HOLD,
            "unknown-hold-released",
            controller_id=event.controller_id,
            hold_id=event.hold_id,
        )
        return
    jobs.cancel(ctx, HOLD_PLACED, hold.hold_id)
    if not _release_page(ctx, hold.hold_id):
        ctx.subject.jobs.append(Job(kind=HOLD_RELEASED, ref=hold.hold_id, page=1))
        ctx.more = True
    ctx.audit(
        ids.N7_LEGAL_HOLD,
        "hold-released",
        controller_id=event.controller_id,
        hold_id=hold.hold_id,
        case_reference=hold.case_reference,
    )
