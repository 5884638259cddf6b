"""The tamper-evident audit trail: pseudonyms, a hash chain per partition, verification.

Each audit event's ``hash`` is an HMAC-SHA256, under a key derived from the
audit secret, over the previous hash and the canonical JSON of the event's
other fields. Changing, removing or reordering any event breaks the link to
its successor, which ``verify_chain`` names; and because the chain is keyed,
someone who can write to the audit topic but does not hold the secret cannot
append a record that verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agents.rules.context import AuditEntry
from schemas.audit import GENESIS_HASH, AuditEvent


def pseudonym(key: bytes, subject_id: str) -> str:
    """Keyed pseudonym of a subject: stable under one key, meaningless without it."""
    return hmac.new(key, subject_id.encode(), hashlib.sha256).hexdigest()


def _chain_key(key: bytes) -> bytes:
    # Separate from the pseudonym key, so one use cannot be turned into the other.
    return hmac.new(key, b"lifecycle-audit-chain", hashlib.sha256).digest()


def event_hash(event: AuditEvent, key: bytes) -> str:
    body = event.model_dump(mode="json", exclude={"hash"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    message = (event.prev_hash + canonical).encode()
    return hmac.new(_chain_key(key), message, hashlib.sha256).hexdigest()


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
    head: ChainHead, facts: AuditEntry, *, partition: int, key: bytes, decided_at: datetime
) -> AuditEvent:
    """The next audit event after ``head`` on ``partition``."""
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
    )
    return unsigned.model_copy(update={"hash": event_hash(unsigned, key)})


@dataclass(frozen=True)
class BrokenLink:
    offset: int
    sequence: int | None
    reason: str


def verify_chain(
    events: Iterable[tuple[int, AuditEvent]], key: bytes, start: ChainHead | None = None
) -> BrokenLink | None:
    """Check (offset, event) pairs of one partition in order; return the first broken link.

    ``start`` is the head just before the first event (genesis when reading
    from the beginning). With ``start=None`` the first event is trusted as the
    anchor, which is how a range in the middle of a partition is verified.
    """
    head = start
    for offset, event in events:
        if event_hash(event, key) != event.hash:
            return BrokenLink(
                offset, event.sequence, "hash does not match the event's content and key"
            )
        if head is not None:
            if event.prev_hash != head.hash:
                return BrokenLink(
                    offset, event.sequence, "prev_hash does not match the previous event"
                )
            if event.sequence != head.sequence + 1:
                return BrokenLink(
                    offset,
                    event.sequence,
                    f"sequence {event.sequence} follows {head.sequence}",
                )
        head = ChainHead.of(event)
    return None
