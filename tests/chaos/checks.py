"""Consistency checks on a snapshot of a pipeline's topics.

They state what users rely on, from the topics alone (never a worker's state):

- every input event was decided: an audit entry names it, or a dead letter
  holds it (an accepted event is never skipped);
- every request was answered with a final response;
- every record due under the policy was deleted: a DELETE names it and the
  system acknowledged it;
- no record was deleted under two different command ids (a redelivered or
  re-sent command keeps its id, which is allowed);
- nothing was deleted early: a retention DELETE is issued no earlier than the
  record's due time under the policy; an erasure DELETE no earlier than its
  request;
- every opt-out reached every marketing system and was acknowledged there;
- no dead letters and nothing undecodable (the chaos traffic is all valid).

Due times come from an oracle written here from the policy and the input
events (``policy_due``), independent of the worker's rules: the retention rule
kinds of ``agents/rules/retention.py`` (fixed, contract end, legal obligation,
default), with the controller's overrides. A record covered by a legal hold is
not required to be deleted until the hold is released (the chaos traffic places
none; ``check`` on other pipelines may meet them).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents.rules.policy import Policy, RuleKind
from schemas.base import DataCategory
from schemas.commands import AckOutcome, Action, Command
from schemas.events import (
    AccessRequested,
    CallRecorded,
    ContractEnded,
    ContractStarted,
    ErasureRequested,
    Event,
    LegalHoldPlaced,
    LegalHoldReleased,
    MarketingOptOutReceived,
    ObjectionReceived,
    PortabilityRequested,
    RecordRegistered,
    RectificationRequested,
    RestrictionRequested,
)
from schemas.responses import ResponseStatus
from tests.chaos.snapshot import At, Snapshot

FINAL = frozenset(
    {ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED}
)
REQUEST_EVENTS = (
    ErasureRequested,
    AccessRequested,
    PortabilityRequested,
    RectificationRequested,
    RestrictionRequested,
    ObjectionReceived,
)
CLOSING = frozenset({AckOutcome.DONE, AckOutcome.NOT_HELD})
MAX_EXAMPLES = 10


@dataclass
class Check:
    name: str
    shows: str  # what a pass means, in a user's words
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


# -- facts drawn from the input events ---------------------------------------------------------


@dataclass(frozen=True)
class RecordFact:
    """One registration of a record (a record generation)."""

    subject_id: str
    system: str
    record_id: str
    category: DataCategory
    controller_id: str
    contract_id: str | None
    registered_at: datetime
    event_id: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subject_id, self.system, self.record_id)


@dataclass(frozen=True)
class ContractFact:
    contract_id: str
    controller_id: str
    started_at: datetime | None
    ended_at: datetime | None

    @property
    def active(self) -> bool:
        return self.started_at is not None and self.ended_at is None


def record_facts(events: Iterable[Event]) -> dict[tuple[str, str, str], list[RecordFact]]:
    """Registrations per (subject, system, record id), earliest first."""
    out: dict[tuple[str, str, str], list[RecordFact]] = defaultdict(list)
    for e in events:
        if isinstance(e, CallRecorded):
            fact = RecordFact(
                e.subject_id,
                e.system,
                e.recording_id,
                DataCategory.CALL_RECORDING,
                e.controller_id,
                None,
                e.event_time,
                e.event_id,
            )
        elif isinstance(e, RecordRegistered):
            fact = RecordFact(
                e.subject_id,
                e.system,
                e.record_id,
                e.category,
                e.controller_id,
                e.contract_id,
                e.event_time,
                e.event_id,
            )
        else:
            continue
        if all(f.event_id != fact.event_id for f in out[fact.key]):
            out[fact.key].append(fact)
    for facts in out.values():
        facts.sort(key=lambda f: f.registered_at)
    return out


def contract_facts(events: Iterable[Event], as_of: datetime | None = None) -> list[ContractFact]:
    """The subject's contracts as known from events up to ``as_of`` (all when None)."""
    started: dict[str, tuple[str, datetime]] = {}
    ended: dict[str, tuple[str, datetime]] = {}
    for e in events:
        if as_of is not None and e.event_time > as_of:
            continue
        if isinstance(e, ContractStarted):
            started.setdefault(e.contract_id, (e.controller_id, e.event_time))
        elif isinstance(e, ContractEnded):
            ended.setdefault(e.contract_id, (e.controller_id, e.event_time))
    return [
        ContractFact(
            cid,
            (started.get(cid) or ended[cid])[0],
            started[cid][1] if cid in started else None,
            ended[cid][1] if cid in ended else None,
        )
        for cid in sorted(set(started) | set(ended))
    ]


STILL_HELD = "still held"


def held_until(record: RecordFact, events: Iterable[Event]) -> datetime | str | None:
    """When the last legal hold covering ``record`` was released, ``STILL_HELD`` while one
    is in place, None when no hold ever covered it."""
    placed: dict[str, LegalHoldPlaced] = {}
    released: dict[str, datetime] = {}
    for e in events:
        if isinstance(e, LegalHoldPlaced):
            placed.setdefault(e.hold_id, e)
        elif isinstance(e, LegalHoldReleased):
            released.setdefault(e.hold_id, e.event_time)
    ends: list[datetime] = []
    for hold_id, hold in placed.items():
        everything = not hold.categories and not hold.record_ids
        if everything or record.category in hold.categories or record.record_id in hold.record_ids:
            if hold_id not in released:
                return STILL_HELD
            ends.append(released[hold_id])
    return max(ends, default=None)


def policy_due(
    record: RecordFact, contracts: list[ContractFact], policy: Policy
) -> datetime | None:
    """When ``record`` is due for deletion under ``policy``, given ``contracts``; None: not due."""
    controller = record.controller_id
    fixed = policy.rule_for(controller, RuleKind.FIXED, record.category)
    if fixed is not None:
        return fixed.keep_for.after(record.registered_at)
    legal = policy.is_legal_obligation(record.category)
    at_end = policy.rule_for(controller, RuleKind.CONTRACT_END)
    relationship = policy.rule_for(controller, RuleKind.LEGAL_OBLIGATION) if legal else at_end
    default = policy.rule_for(controller, RuleKind.DEFAULT)
    assert at_end is not None
    assert relationship is not None
    assert default is not None
    own = next((c for c in contracts if c.contract_id == record.contract_id), None)
    if not legal and own is not None and own.ended_at is not None:
        return at_end.keep_for.after(own.ended_at)
    mine = [c for c in contracts if c.controller_id == controller]
    if any(c.active for c in mine):
        return None
    ends = [c.ended_at for c in mine if c.ended_at is not None]
    if ends and (record.contract_id is not None or record.registered_at <= max(ends)):
        return relationship.keep_for.after(max(ends))
    return default.keep_for.after(record.registered_at)


# -- indexes over the outputs ------------------------------------------------------------------


@dataclass
class Outputs:
    """Commands by id (first issuance), closing acks, DELETEs per record."""

    first: dict[str, Command] = field(default_factory=dict)
    closed: set[tuple[str, str]] = field(default_factory=set)  # (command id, system)
    deletes: dict[tuple[str, str, str], dict[str, Command]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    @classmethod
    def of(cls, snapshot: Snapshot) -> Outputs:
        out = cls()
        for at in snapshot.commands:
            c = at.model
            seen = out.first.get(c.command_id)
            if seen is None or c.issued_at < seen.issued_at:
                out.first[c.command_id] = c
        for c in out.first.values():
            if c.action is Action.DELETE:
                for record_id in c.record_ids:
                    out.deletes[(c.subject_id, c.target_system, record_id)][c.command_id] = c
        out.closed = {
            (a.model.command_id, a.model.system)
            for a in snapshot.acks
            if a.model.outcome in CLOSING
        }
        return out

    def acknowledged(self, command: Command) -> bool:
        return (command.command_id, command.target_system) in self.closed


def _where(at: At[object]) -> str:
    return f"{at.topic}[{at.partition}]@{at.offset}"


def _by_subject(snapshot: Snapshot) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for at in snapshot.events:
        out[at.model.subject_id].append(at.model)
    return out


# -- the checks --------------------------------------------------------------------------------


def events_decided(snapshot: Snapshot) -> Check:
    check = Check(
        "events decided", "every accepted input event is named by an audit entry or dead-lettered"
    )
    named = {i for at in snapshot.audit for i in at.model.event_ids_in}
    parked = {(d.model.topic, d.model.partition, d.model.offset) for d in snapshot.dead_letters}
    lost: Counter[str] = Counter()
    for at in snapshot.events:
        check.checked += 1
        if at.model.event_id in named or (at.topic, at.partition, at.offset) in parked:
            continue
        kind = type(at.model).__name__
        lost[kind] += 1
        check.violations.append(
            f"{kind} {at.model.event_id} (subject {at.model.subject_id}) at {_where(at)}: "
            "no audit entry names it and no dead letter holds it"
        )
    if lost:
        check.notes.append(
            "never decided, by type: " + ", ".join(f"{k} {n}" for k, n in sorted(lost.items()))
        )
        partitions = Counter(
            f"{at.topic}[{at.partition}]"
            for at in snapshot.events
            if at.model.event_id not in named
        )
        check.notes.append(
            "by partition: " + ", ".join(f"{k} {n}" for k, n in sorted(partitions.items()))
        )
    return check


def requests_answered(snapshot: Snapshot) -> Check:
    check = Check("requests answered", "every accepted request has a final response")
    statuses: dict[tuple[str, str], list[ResponseStatus]] = defaultdict(list)
    for answer in sorted(snapshot.responses, key=lambda a: (a.partition, a.offset)):
        r = answer.model
        statuses[(r.subject_id, r.request_id)].append(r.status)
    named = {i for at in snapshot.audit for i in at.model.event_ids_in}
    for at in snapshot.events:
        e = at.model
        if not isinstance(e, REQUEST_EVENTS):
            continue
        check.checked += 1
        seen = statuses.get((e.subject_id, e.request_id), [])
        if any(s in FINAL for s in seen):
            continue
        last = f"last response {seen[-1].value}" if seen else "no response at all"
        decided = "decided" if e.event_id in named else "never decided"
        check.violations.append(
            f"{type(e).__name__} {e.request_id} (subject {e.subject_id}) at {_where(at)}: "
            f"{last}, {decided}"
        )
    return check


def due_records_deleted(
    snapshot: Snapshot, policy: Policy, now: datetime, grace: timedelta
) -> Check:
    check = Check(
        "due records deleted",
        f"every record due under the policy by {grace.total_seconds():.0f}s before the check "
        "has an acknowledged DELETE",
    )
    outputs = Outputs.of(snapshot)
    subjects = _by_subject(snapshot)
    not_yet = held = 0
    for key, facts in record_facts(a.model for a in snapshot.events).items():
        record = facts[0]
        events = subjects[record.subject_id]
        due = policy_due(record, contract_facts(events), policy)
        if due is None:
            continue
        hold = held_until(record, events)
        if hold is not None:
            held += 1
            if hold == STILL_HELD:
                continue
            assert isinstance(hold, datetime)
            due = max(due, hold)
        # A deletion resting on no contract may wait for the contract sources'
        # watermark up to the policy's maximum (agents.rules.retention).
        waits = (
            policy.event_time.max_wait.as_timedelta()
            if policy.event_time.contract_sources
            and policy.rule_for(record.controller_id, RuleKind.FIXED, record.category) is None
            else timedelta(0)
        )
        if due + grace + waits > now:
            not_yet += 1
            continue
        check.checked += 1
        commands = outputs.deletes.get(key, {})
        if not commands:
            check.violations.append(
                f"{record.record_id} on {record.system} (subject {record.subject_id}) due "
                f"{due.isoformat()}: no DELETE names it"
            )
        elif not any(outputs.acknowledged(c) for c in commands.values()):
            check.violations.append(
                f"{record.record_id} on {record.system} (subject {record.subject_id}): DELETE "
                f"{', '.join(sorted(commands))} never acknowledged"
            )
    check.notes.append(f"{not_yet} record(s) due too recently to require")
    if held:
        check.notes.append(f"{held} record(s) under a legal hold: due once it is released")
    return check


def one_command_per_record(snapshot: Snapshot) -> Check:
    check = Check(
        "one command id per record",
        "no record generation was deleted under two different command ids "
        "(the same id redelivered is allowed)",
    )
    outputs = Outputs.of(snapshot)
    facts = record_facts(a.model for a in snapshot.events)
    for key, commands in outputs.deletes.items():
        check.checked += 1
        generations = max(1, len(facts.get(key, [])))
        if len(commands) > generations:
            subject, system, record_id = key
            listed = "; ".join(
                f"{c.command_id} ({c.rule_id}, records {','.join(c.record_ids)}, first issued "
                f"{c.issued_at.isoformat()})"
                for c in sorted(commands.values(), key=lambda c: c.issued_at)
            )
            check.violations.append(
                f"{record_id} on {system} (subject {subject}), registered {generations} time(s), "
                f"deleted under {len(commands)} command ids: {listed}"
            )
    return check


def nothing_deleted_early(snapshot: Snapshot, policy: Policy) -> Check:
    check = Check(
        "nothing deleted early",
        "every retention DELETE was issued at or after the record's due time under the "
        "policy; every erasure DELETE after its request",
    )
    outputs = Outputs.of(snapshot)
    facts = record_facts(a.model for a in snapshot.events)
    subjects = _by_subject(snapshot)
    erasures = {
        (e.subject_id, e.request_id): e.event_time
        for e in (a.model for a in snapshot.events)
        if isinstance(e, ErasureRequested)
    }
    for command in outputs.first.values():
        if command.action is not Action.DELETE:
            continue
        for record_id in command.record_ids:
            check.checked += 1
            key = (command.subject_id, command.target_system, record_id)
            if key not in facts:
                check.violations.append(
                    f"{command.command_id} deletes {record_id} on {command.target_system}, "
                    "which was never registered"
                )
                continue
            issued = command.issued_at
            if command.request_id is not None:
                asked = erasures.get((command.subject_id, command.request_id))
                if asked is None or asked > issued:
                    check.violations.append(
                        f"{command.command_id} ({command.rule_id}) deletes {record_id} for "
                        f"request {command.request_id}, which was not asked before "
                        f"{issued.isoformat()}"
                    )
                continue
            record = facts[key][0]
            due = policy_due(record, contract_facts(subjects[record.subject_id], issued), policy)
            if due is None or issued < due:
                when = "not due at all" if due is None else f"due {due.isoformat()}"
                check.violations.append(
                    f"{command.command_id} ({command.rule_id}) deleted {record_id} on "
                    f"{command.target_system} (subject {command.subject_id}) at "
                    f"{issued.isoformat()}: {when}"
                )
    return check


def opt_outs_suppressed(snapshot: Snapshot, policy: Policy) -> Check:
    systems = [s.id for s in policy.marketing_systems]
    check = Check(
        "opt-outs suppressed",
        "every opt-out was sent to and acknowledged by every marketing system "
        f"({', '.join(systems)})",
    )
    outputs = Outputs.of(snapshot)
    suppressions: dict[tuple[str, str, str], list[Command]] = defaultdict(list)
    for c in outputs.first.values():
        if c.action is Action.SUPPRESS_MARKETING and c.request_id is not None:
            suppressions[(c.subject_id, c.request_id, c.target_system)].append(c)
    for at in snapshot.events:
        e = at.model
        if not isinstance(e, MarketingOptOutReceived):
            continue
        for system in systems:
            check.checked += 1
            sent = suppressions.get((e.subject_id, e.event_id, system), [])
            if not sent:
                check.violations.append(
                    f"opt-out {e.event_id} (subject {e.subject_id}) at {_where(at)}: "
                    f"no suppression sent to {system}"
                )
            elif not any(outputs.acknowledged(c) for c in sent):
                check.violations.append(
                    f"opt-out {e.event_id} (subject {e.subject_id}): suppression on {system} "
                    "never acknowledged"
                )
    return check


def no_dead_letters(snapshot: Snapshot) -> Check:
    check = Check(
        "no dead letters, all readable",
        "the traffic is valid, so nothing was dead-lettered and every record on the "
        "pipeline's topics decodes",
    )
    check.checked = len(snapshot.events) + len(snapshot.dead_letters)
    for d in snapshot.dead_letters:
        # Parked items (decoded, not processed or not delivered) say why in failure_class.
        why = getattr(d.model, "failure_class", None) or d.model.reason_class
        check.violations.append(
            f"dead letter from {d.model.topic}[{d.model.partition}]@{d.model.offset}: "
            f"{why.value}: {d.model.reason}"
        )
    for u in snapshot.undecodable:
        check.violations.append(f"undecodable record at {_where(u)}: {u.model}")
    return check


def run_checks(
    snapshot: Snapshot, policy: Policy, *, now: datetime, grace: timedelta
) -> list[Check]:
    return [
        events_decided(snapshot),
        requests_answered(snapshot),
        due_records_deleted(snapshot, policy, now, grace),
        one_command_per_record(snapshot),
        nothing_deleted_early(snapshot, policy),
        opt_outs_suppressed(snapshot, policy),
        no_dead_letters(snapshot),
    ]


# -- figures (facts, not pass/fail) ------------------------------------------------------------


def figures(snapshot: Snapshot, policy: Policy) -> dict[str, str]:
    out: dict[str, str] = {}
    kinds = Counter(type(a.model).__name__ for a in snapshot.events)
    out["input events"] = (
        f"{len(snapshot.events)} (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")"
    )
    actions = Counter(a.model.action.value for a in snapshot.commands)
    distinct = len({a.model.command_id for a in snapshot.commands})
    out["commands"] = (
        f"{len(snapshot.commands)} records, {distinct} distinct ids ("
        + ", ".join(f"{k} {n}" for k, n in sorted(actions.items()))
        + ")"
    )
    out["acknowledgements"] = str(len(snapshot.acks))
    out["responses"] = str(len(snapshot.responses))
    out["audit records"] = str(len(snapshot.audit))
    out["audit byte-identical repeats"] = str(audit_repeats(snapshot))
    out["decisions recorded more than once"] = str(repeated_decisions(snapshot))
    late = deletion_lateness(snapshot, policy)
    if late:
        late.sort()
        out["retention deletes: issued after due (s)"] = (
            f"median {late[len(late) // 2]:.1f}, p95 {late[int(len(late) * 0.95)]:.1f}, "
            f"max {late[-1]:.1f} (n={len(late)})"
        )
    return out


def audit_repeats(snapshot: Snapshot) -> int:
    """Audit records byte-identical to the record before them in their partition."""
    by_partition: dict[int, list[At[object]]] = defaultdict(list)
    for at in snapshot.audit:
        by_partition[at.partition].append(at)
    repeats = 0
    for items in by_partition.values():
        items.sort(key=lambda a: a.offset)
        repeats += sum(1 for a, b in itertools.pairwise(items) if a.raw and a.raw == b.raw)
    return repeats


def repeated_decisions(snapshot: Snapshot) -> int:
    """Audit records stating a decision already recorded for the same input (replays)."""
    seen: Counter[tuple[object, ...]] = Counter()
    for at in snapshot.audit:
        a = at.model
        if not a.event_ids_in:
            continue
        seen[
            (
                a.subject_ref,
                tuple(a.event_ids_in),
                a.rule_id,
                a.decision,
                tuple(a.command_ids_out),
                tuple(sorted(a.details.items())),
            )
        ] += 1
    return sum(n - 1 for n in seen.values() if n > 1)


def deletion_lateness(snapshot: Snapshot, policy: Policy) -> list[float]:
    """Seconds from due to first issue, for each record of each retention DELETE."""
    outputs = Outputs.of(snapshot)
    facts = record_facts(a.model for a in snapshot.events)
    subjects = _by_subject(snapshot)
    late: list[float] = []
    for command in outputs.first.values():
        if command.action is not Action.DELETE or command.request_id is not None:
            continue
        for record_id in command.record_ids:
            found = facts.get((command.subject_id, command.target_system, record_id))
            if not found:
                continue
            events = subjects[command.subject_id]
            due = policy_due(found[0], contract_facts(events, command.issued_at), policy)
            if due is not None:
                late.append((command.issued_at - due).total_seconds())
    return late
