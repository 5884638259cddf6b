"""The tamper-evident audit trail: pseudonyms, a hash chain per partition, verification.

Each audit event's ``hash`` is an HMAC-SHA256, under a key derived from the
audit secret, over the previous hash and the canonical JSON of the event's
other fields. Changing, removing or reordering any event breaks the link to
its successor, which ``check_chain`` names; and because the chain is keyed,
someone who can write to the audit topic but does not hold the secret cannot
append a record that verifies.

Two things look like repetition but are not tampering, and ``check_chain``
counts them instead of failing:

- a *replay*: after a crash the worker decides the inputs after its last
  committed offset again and appends those decisions again, properly chained.
  Each event names its input (``source_*``), so a later run of events for an
  input already recorded is a replay; with the same facts it is ``replayed``,
  with other facts (the state had moved on before the crash) ``redecided``.
- a *duplicate delivery*: a byte-identical copy of a record already in the
  chain (a producer retry without idempotence, as before audit records were
  written transactionally). It carries no new fact and is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from agents.rules.context import AuditEntry
from schemas.audit import GENESIS_HASH, AuditEvent, AuditSource

# Fields added after v1 are left out of the hashed body while unset, so an
# event written before they existed keeps the hash it was written with.
_ADDED_SINCE_V1 = ("source_topic", "source_partition", "source_offset", "source_entry")
# Where and when a decision was written down, as opposed to what it says.
_POSITION_FIELDS = frozenset(
    {"audit_id", "partition", "sequence", "prev_hash", "hash", "decided_at", *_ADDED_SINCE_V1}
)
# How many recent hashes and inputs the checker remembers to recognise
# duplicates and replays: far more than one crash can replay (a batch plus
# the commit interval), bounded so a long partition is checked in fixed memory.
RECOGNITION_WINDOW = 100_000

K = TypeVar("K")
V = TypeVar("V")


def pseudonym(key: bytes, subject_id: str) -> str:
    """Keyed pseudonym of a subject: stable under one key, meaningless without it."""
    return hmac.new(key, subject_id.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=8)
def _chain_key(key: bytes) -> bytes:
    # Separate from the pseudonym key, so one use cannot be turned into the other.
    return hmac.new(key, b"lifecycle-audit-chain", hashlib.sha256).digest()


def _canonical(body: dict[str, object]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def event_hash(event: AuditEvent, key: bytes) -> str:
    body = event.model_dump(mode="json", exclude={"hash"})
    for name in _ADDED_SINCE_V1:
        if body.get(name) is None:
            body.pop(name, None)
    message = (event.prev_hash + _canonical(body)).encode()
    return hmac.new(_chain_key(key), message, hashlib.sha256).hexdigest()


def facts_digest(event: AuditEvent) -> str:
    """What the event says (subject, rule, decision, ids, details), not where it sits."""
    body = event.model_dump(mode="json", exclude=set(_POSITION_FIELDS))
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    sequence: int
    hash: str

    @classmethod
    def genesis(cls) -> ChainHead:
        return cls(sequence=-1, hash=GENESIS_HASH)

    @classmethod
    def of(cls, event: AuditEvent) -> ChainHead:
        return cls(sequence=event.sequence, hash=event.hash)


def link(
    head: ChainHead,
    facts: AuditEntry,
    *,
    partition: int,
    key: bytes,
    decided_at: datetime,
    source: AuditSource | None = None,
    entry_index: int = 0,
) -> AuditEvent:
    """The next audit event after ``head`` on ``partition``.

    ``source`` is the input decided and ``entry_index`` the place of ``facts``
    among that decision's audit entries.
    """
    sequence = head.sequence + 1
    audit_id = f"aud-{partition}-{sequence}"
    unsigned = AuditEvent(
        audit_id=audit_id,
        partition=partition,
        sequence=sequence,
        prev_hash=head.hash,
        hash=GENESIS_HASH,
        subject_ref=pseudonym(key, facts.subject_id),
        controller_id=facts.controller_id,
        rule_id=facts.rule_id,
        policy_version=facts.policy_version,
        decision=facts.decision,
        event_ids_in=list(facts.event_ids_in),
        command_ids_out=list(facts.command_ids_out),
        event_time=facts.event_time,
        decided_at=decided_at,
        details=dict(facts.details),
        source_topic=None if source is None else source.topic,
        source_partition=None if source is None else source.partition,
        source_offset=None if source is None else source.offset,
        source_entry=None if source is None else entry_index,
    )
    return unsigned.model_copy(update={"hash": event_hash(unsigned, key)})


@dataclass(frozen=True)
class BrokenLink:
    offset: int
    sequence: int | None
    reason: str


@dataclass(frozen=True)
class ChainReport:
    """What checking a chain found: the first broken link, and what was recognised."""

    checked: int
    broken: BrokenLink | None
    replayed: int = 0
    redecided: int = 0
    duplicates: int = 0
    first_replay_offset: int | None = None


class _Window(Generic[K, V]):
    """An insertion-ordered map that forgets its oldest entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self.items[key] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)


def check_chain(
    events: Iterable[tuple[int, AuditEvent]],
    key: bytes,
    start: ChainHead | None = None,
    *,
    window: int = RECOGNITION_WINDOW,
) -> ChainReport:
    """Check (offset, event) pairs of one partition in order.

    ``start`` is the head just before the first event (genesis when reading
    from the beginning). With ``start=None`` the first event is trusted as the
    anchor, which is how a range in the middle of a partition is verified.
    Checking stops at the first broken link (tampering: a changed, forged,
    removed or reordered record); replays and duplicate deliveries are counted.
    """
    head = start
    checked = replayed = redecided = duplicates = 0
    first_replay: int | None = None
    seen: _Window[str, None] = _Window(window)
    # The facts each input's first run of events recorded; a later run for the
    # same input is a replay. ``run`` is the input of the previous event.
    first_runs: _Window[AuditSource, set[str]] = _Window(window)
    run: AuditSource | None = None
    run_is_first = False

    def report(broken: BrokenLink | None) -> ChainReport:
        return ChainReport(checked, broken, replayed, redecided, duplicates, first_replay)

    for offset, event in events:
        checked += 1
        if event_hash(event, key) != event.hash:
            return report(
                BrokenLink(
                    offset, event.sequence, "hash does not match the event's content and key"
                )
            )
        if event.hash in seen.items:
            # The HMAC matched, so the content is identical too: no new fact.
            duplicates += 1
            continue
        if head is not None:
            if event.prev_hash != head.hash:
                return report(
                    BrokenLink(
                        offset, event.sequence, "prev_hash does not match the previous event"
                    )
                )
            if event.sequence != head.sequence + 1:
                return report(
                    BrokenLink(
                        offset, event.sequence, f"sequence {event.sequence} follows {head.sequence}"
                    )
                )
        head = ChainHead.of(event)
        seen.put(event.hash, None)
        source = event.source
        if source is None:
            run = None
            continue
        digest = facts_digest(event)
        # A decision's events share a source and count up from entry 0; a
        # replay of the same input starts at 0 again.
        if source != run or not event.source_entry:
            run = source
            run_is_first = source not in first_runs.items
            if run_is_first:
                first_runs.put(source, set())
        if run_is_first:
            first_runs.items[source].add(digest)
            continue
        if first_replay is None:
            first_replay = offset
        if digest in first_runs.items[source]:
            replayed += 1
        else:
            redecided += 1
    return report(None)


def verify_chain(
    events: Iterable[tuple[int, AuditEvent]], key: bytes, start: ChainHead | None = None
) -> BrokenLink | None:
    """The first broken link of ``events`` (see ``check_chain``), or None."""
    return check_chain(events, key, start).broken
