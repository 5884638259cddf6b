"""The previous state format (format 0), read once and converted.

Before keyed stores, a subject's whole state was one JSON value (``SubjectState``)
under its id in the same ``subjects`` table. A worker of this version reads
such a value when it first meets the subject (an event, an ack, or the
migration sweep's tick: ``agents.runtime.worker``), converts it to the keyed layout
(``convert``) and deletes the old value in the same write, so a deployment
upgrades in place by replaying nothing (docs/deployment.md, "Migration").

The models below describe format 0 exactly; nested values whose shape did not
change are today's models.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, ValidationError

from agents.rules.context import Ctx
from agents.rules.policy import Policy
from agents.rules.state import (
    ITEM_COVERED,
    ITEM_EXPORT,
    ITEM_KEPT,
    ITEM_PENDING,
    ITEM_PORTABLE,
    ClosedCommand,
    ConsentState,
    ContractState,
    EvidenceNote,
    ExportNote,
    Hold,
    KeptNote,
    OutstandingCommand,
    PortableRecord,
    RecordState,
    RequestState,
    Suppression,
)
from agents.store import keys
from agents.store.codec import UnreadableState, encode
from agents.store.layer import Write
from agents.store.memory import MemoryPartition
from schemas.base import Frozen, Identifier, RequestType, ShortText, Slug, UtcDatetime
from schemas.commands import AckOutcome, Command
from schemas.responses import KeptItem, ResponseStatus

# Closed command ids of format 0 carry no outcome.
UNKNOWN_OUTCOME = "unknown"


class LegacyRequest(Frozen):
    request_id: Identifier
    request_type: RequestType
    controller_id: Slug
    event_id: Identifier
    received_at: UtcDatetime
    due_at: UtcDatetime
    warn_at: UtcDatetime
    status: ResponseStatus
    pending_command_ids: list[Identifier] = Field(default_factory=list)
    kept: list[KeptItem] = Field(default_factory=list)
    reasons: list[ShortText] = Field(default_factory=list)
    warned: bool = False
    overdue: bool = False
    closed_at: UtcDatetime | None = None
    workflow: Slug | None = None
    placeholder: bool = False
    identity_required: bool = False
    identity_verified_at: UtcDatetime | None = None
    evidence: list[EvidenceNote] = Field(default_factory=list)
    missing_evidence: list[ShortText] = Field(default_factory=list)
    clock_started_at: UtcDatetime | None = None
    extended_months: int = 0
    exports: list[ExportNote] = Field(default_factory=list)
    portable: list[PortableRecord] = Field(default_factory=list)
    record_keys: list[str] = Field(default_factory=list)
    restriction_active: bool = False


class LegacyCommand(Frozen):
    command: Command
    sent_at: UtcDatetime
    next_retry_at: UtcDatetime
    escalated: bool = False
    record_keys: list[str] = Field(default_factory=list)


class LegacySubjectState(Frozen):
    subject_id: Identifier
    records: dict[str, RecordState] = Field(default_factory=dict)
    contracts: dict[str, ContractState] = Field(default_factory=dict)
    suppression: Suppression | None = None
    holds: dict[str, Hold] = Field(default_factory=dict)
    consents: dict[str, ConsentState] = Field(default_factory=dict)
    requests: dict[str, LegacyRequest] = Field(default_factory=dict)
    commands: dict[str, LegacyCommand] = Field(default_factory=dict)
    restricted: bool = False
    processed_event_ids: list[str] = Field(default_factory=list)
    closed_command_ids: list[str] = Field(default_factory=list)
    early_acks: dict[str, AckOutcome] = Field(default_factory=dict)
    high_water: dict[str, UtcDatetime] = Field(default_factory=dict)


def read(key: bytes, raw: bytes) -> LegacySubjectState:
    try:
        return LegacySubjectState.model_validate_json(raw)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "(value)"
        raise UnreadableState(key, raw, f"format-0 subject state: invalid at {where}") from None


def convert(raw: bytes, *, subject_id: str, policy: Policy, now: datetime) -> list[Write]:
    """The keyed entries (indexes included) of a format-0 subject state, and the
    deletion of the old value."""
    legacy_key = subject_id.encode()
    old = read(legacy_key, raw)
    if old.subject_id != subject_id:
        raise UnreadableState(legacy_key, raw, "format-0 subject state of another subject")
    ctx = Ctx(
        MemoryPartition(),
        subject_id=subject_id,
        policy=policy,
        now=now,
        event_time=now,
        event_ids_in=[],
    )
    h = ctx.subject
    h.contracts = dict(old.contracts)
    h.suppression = old.suppression
    h.holds = dict(old.holds)
    h.consents = dict(old.consents)
    h.restricted = old.restricted
    h.early_acks = dict(old.early_acks)
    h.high_water = dict(old.high_water)
    for key, record in old.records.items():
        ctx.records[key] = record
        for hold_id in record.held_by:
            ctx.mark_held(hold_id, key)
    waiters: dict[str, list[str]] = {}
    for request in old.requests.values():
        for cid in request.pending_command_ids:
            waiters.setdefault(cid, []).append(request.request_id)
    for cid, tracked in old.commands.items():
        ctx.commands[cid] = OutstandingCommand(
            command=tracked.command,
            sent_at=tracked.sent_at,
            next_retry_at=tracked.next_retry_at,
            escalated=tracked.escalated,
            waiters=waiters.get(cid, []),
        )
    for request in old.requests.values():
        _request(ctx, request)
    for cid in old.closed_command_ids:
        ctx.closed[cid] = ClosedCommand(closed_at=now, outcome=UNKNOWN_OUTCOME)
    if old.processed_event_ids:
        from agents.rules import seen

        for event_id in old.processed_event_ids:
            seen.remember(ctx, event_id)
    return [*ctx.finish().writes, (legacy_key, None)]


def _request(ctx: Ctx, old: LegacyRequest) -> None:
    rid = old.request_id
    pending = [c for c in old.pending_command_ids if c in ctx.commands]
    for cid in pending:
        ctx.item_put(rid, ITEM_PENDING, cid)
    for item in old.kept:
        ctx.item_put(rid, ITEM_KEPT, f"{item.system}/{item.record_id}", encode(KeptNote(item=item)))
    for note in old.exports:
        ctx.item_put(rid, ITEM_EXPORT, note.command_id, encode(note))
    for portable in old.portable:
        name = f"{portable.system}/{portable.record.record_id}"
        ctx.item_put(rid, ITEM_PORTABLE, name, encode(portable))
    if old.restriction_active:
        for key in old.record_keys:
            ctx.item_put(rid, ITEM_COVERED, key)
    ctx.subject.requests[rid] = request_of(old, pending=len(pending))


def request_of(old: LegacyRequest, *, pending: int) -> RequestState:
    """A format-0 request as today's request (its lists become counts; the items
    themselves are written by ``convert``)."""
    fields = old.model_dump(
        exclude={"pending_command_ids", "kept", "exports", "portable", "record_keys"}
    )
    return RequestState.model_validate(
        {
            **fields,
            "pending": pending,
            "kept_count": len({(k.system, k.record_id) for k in old.kept}),
            "systems": sorted({k.split("/", 1)[0] for k in old.record_keys}),
        }
    )


def is_legacy_key(key: bytes) -> bool:
    return keys.is_legacy(key)
