"""The per-subject state the rules read and write: one definition of each piece.

A subject's state is not one value. ``SubjectHeader`` holds what is small and
bounded (contracts, suppression, holds, consents, requests, counters); each
record, outstanding command and closed command is its own entry, keyed below
the subject (``agents.store.keys``), so an event reads and writes the entries
it touches, not the subject's history. Per-request lists that grow with the
records (kept items, covered records, exports, portable records, pending
commands) are request items (``ITEM_*`` kinds), also keyed.

Stored values carry a format version ``v``; ``agents.store.codec`` upgrades
older versions when they are read. Personal data values never enter the state:
records are known by id, system, category and field *names*; records are
dropped once their deletion is confirmed.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import (
    Channel,
    DataCategory,
    DataSource,
    DocumentType,
    Frozen,
    Identifier,
    LegalBasis,
    RequestType,
    ShortText,
    Slug,
    UtcDatetime,
)
from schemas.commands import AckOutcome, Command, ExportedRecord
from schemas.responses import KeptItem, ResponseStatus

# Acks that arrive before their command are remembered (bounded) until it is issued.
MAX_EARLY_ACKS = 100
# Identity documents noted per request (N12 needs two; more is noise or abuse).
MAX_EVIDENCE = 20

FINAL_REQUEST_STATUSES = frozenset(
    {ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED}
)

# Request item kinds (``q`` keys): what a request keeps per record or per command.
ITEM_PENDING = "p"  # a command the request waits for (value empty)
ITEM_KEPT = "k"  # a record kept, with the reason (KeptItem)
ITEM_COVERED = "r"  # a record a restriction covers (value empty)
ITEM_EXPORT = "e"  # an export a system confirmed (ExportNote)
ITEM_PORTABLE = "x"  # a record a system exported for portability (PortableRecord)


class RecordStatus(StrEnum):
    HELD = "held"  # we hold it (not to be confused with a legal hold)
    DELETING = "deleting"  # a DELETE command is outstanding
    DELETED = "deleted"  # confirmed; such records are dropped from the state


def record_key(system: str, record_id: str) -> str:
    return f"{system}/{record_id}"


class RecordState(Frozen):
    v: int = 1
    record_id: Identifier
    system: Slug
    category: DataCategory
    legal_basis: LegalBasis
    source: DataSource
    purpose: Slug
    controller_id: Slug
    contract_id: Identifier | None = None
    provided_by_subject: bool
    fields: list[Slug] = Field(default_factory=list)
    registered_at: UtcDatetime
    # The id of the event that registered it: a record registered again after its
    # deletion is a new generation, so its DELETE is a new command (empty: a record
    # converted from the previous format, whose commands carried no generation).
    generation: str = ""
    # The retention rule governing it now and when that rule makes it due
    # (None: not due while e.g. a contract is active).
    rule_id: ShortText | None = None
    due_at: UtcDatetime | None = None
    status: RecordStatus = RecordStatus.HELD
    # Legal holds found blocking its (overdue) deletion, already audited.
    held_by: list[Identifier] = Field(default_factory=list)
    command_id: Identifier | None = None
    # Registered again while its DELETE was outstanding: held again (as this
    # generation, recorded at that time) once the DELETE is confirmed.
    next_generation: str | None = None
    reregistered_at: UtcDatetime | None = None

    @property
    def key(self) -> str:
        return record_key(self.system, self.record_id)


class ContractState(Frozen):
    contract_id: Identifier
    controller_id: Slug
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    # When an ended contract's dates are no longer needed in the state.
    forget_at: UtcDatetime | None = None

    @property
    def active(self) -> bool:
        return self.started_at is not None and self.ended_at is None


class Suppression(Frozen):
    """The subject is on the marketing suppression list (N1); never removed by the rules."""

    since: UtcDatetime
    channels: list[Channel]


class Hold(Frozen):
    """A legal hold. Empty ``categories`` and ``record_ids`` mean all of the subject's records."""

    hold_id: Identifier
    reason: ShortText
    case_reference: ShortText
    categories: list[DataCategory] = Field(default_factory=list)
    record_ids: list[Identifier] = Field(default_factory=list)
    placed_at: UtcDatetime
    controller_id: Slug

    def covers(self, record: RecordState) -> bool:
        if not self.categories and not self.record_ids:
            return True
        return record.category in self.categories or record.record_id in self.record_ids


class ConsentState(Frozen):
    purpose: Slug
    given_at: UtcDatetime | None = None
    withdrawn_at: UtcDatetime | None = None


class EvidenceNote(Frozen):
    """An identity document received for a request (N12): its kind and dates only."""

    evidence_id: Identifier
    document_type: DocumentType
    received_at: UtcDatetime
    issued_on: date | None = None


class ExportNote(Frozen):
    """An export a system confirmed for an access or portability request."""

    v: int = 1
    system: Slug
    command_id: Identifier
    export_reference: ShortText | None = None


class PortableRecord(Frozen):
    """A record a system exported for a portability request; held only until the
    response carrying it is sent, then dropped from the state."""

    v: int = 1
    system: Slug
    record: ExportedRecord


class KeptNote(Frozen):
    """A record a request leaves in place, and why (N10): a request item."""

    v: int = 1
    item: KeptItem


class RequestState(Frozen):
    request_id: Identifier
    request_type: RequestType
    controller_id: Slug
    event_id: Identifier
    received_at: UtcDatetime
    due_at: UtcDatetime
    warn_at: UtcDatetime
    status: ResponseStatus
    # Commands it waits for (their ids are ITEM_PENDING items).
    pending: int = 0
    # Records kept, with reasons (ITEM_KEPT items).
    kept_count: int = 0
    # Systems its commands went to (for the answer); bounded by the policy's systems.
    systems: list[Slug] = Field(default_factory=list)
    reasons: list[ShortText] = Field(default_factory=list)
    warned: bool = False
    overdue: bool = False
    closed_at: UtcDatetime | None = None
    # -- rights workflows (agents/rules/rights.py and siblings) --------------------
    # Which workflow completes it when its commands are done (None: requests.finalize).
    workflow: Slug | None = None
    # Evidence received for a request not yet received: not a request yet, only
    # a holder for the evidence (no deadlines; discarded at ``due_at``).
    placeholder: bool = False
    # Identity gate (N12): while required and not verified the deadline clock has
    # not started; ``due_at`` is then provisional (one month from receipt, used to
    # chase the evidence), and responses carry ``due_at = None``.
    identity_required: bool = False
    identity_verified_at: UtcDatetime | None = None
    evidence: list[EvidenceNote] = Field(default_factory=list)
    missing_evidence: list[ShortText] = Field(default_factory=list)
    # When the deadline clock started (receipt, or identity verification).
    clock_started_at: UtcDatetime | None = None
    extended_months: int = 0
    # Restriction: whether it is in force (its records are ITEM_COVERED items).
    restriction_active: bool = False
    # -- event time (agents/rules/cutoff.py) -------------------------------------------
    # It covers the subject's data as of ``received_at``; its answer waits until every
    # source's watermark has passed that time or until ``cutoff_wait_until``
    # (processing time), whichever first. None: it does not wait.
    cutoff_wait_until: UtcDatetime | None = None
    cutoff_settled: bool = False
    # Sources that had not caught up when it settled (named in the answer).
    lagging: list[Slug] = Field(default_factory=list, max_length=50)
    # Commands were sent for it (an erasure that kept everything is refused).
    acted: bool = False
    # Records reported late (event time at or before receipt) after the answer are
    # being handled: an amended answer follows when their commands are done.
    amending: bool = False
    amendments: int = 0
    # Systems that reported records late since the last answer (for the amended one).
    late_systems: list[Slug] = Field(default_factory=list, max_length=50)

    @property
    def final(self) -> bool:
        return self.status in FINAL_REQUEST_STATUSES

    @property
    def waits_for_cutoff(self) -> bool:
        return self.cutoff_wait_until is not None and not self.cutoff_settled

    @property
    def awaiting_identity(self) -> bool:
        return self.identity_required and self.identity_verified_at is None


class OutstandingCommand(Frozen):
    """A command sent and not yet acknowledged DONE/NOT_HELD."""

    v: int = 1
    command: Command
    sent_at: UtcDatetime
    next_retry_at: UtcDatetime
    escalated: bool = False
    # Requests waiting for it (an erasure also waits for a retention DELETE in flight).
    waiters: list[Identifier] = Field(default_factory=list)

    @property
    def command_id(self) -> str:
        return self.command.command_id

    @property
    def record_keys(self) -> list[str]:
        system = self.command.target_system
        return [record_key(system, r) for r in self.command.record_ids]


class ClosedCommand(Frozen):
    """A command acknowledged (or withdrawn), remembered so a late ack is recognised."""

    v: int = 1
    closed_at: UtcDatetime
    outcome: ShortText


class Job(Frozen):
    """Work that touches many records, done a page per step (``agents.rules.jobs``)."""

    kind: Slug
    ref: Identifier  # the request, contract, hold, ... it is for
    cursor: str | None = None  # last record key (or item) done
    page: int = 0
    data: dict[str, str] = Field(default_factory=dict)


class SubjectHeader(BaseModel):
    """The subject's bounded state; mutable within one decision (``Ctx.subject``)."""

    model_config = ConfigDict(extra="forbid")

    v: int = 1
    subject_id: Identifier
    contracts: dict[str, ContractState] = Field(default_factory=dict)
    suppression: Suppression | None = None
    holds: dict[str, Hold] = Field(default_factory=dict)
    consents: dict[str, ConsentState] = Field(default_factory=dict)
    requests: dict[str, RequestState] = Field(default_factory=dict)
    restricted: bool = False
    # Acks that arrived before the command they answer (e.g. after a state
    # restore); applied when the command is issued.
    early_acks: dict[str, AckOutcome] = Field(default_factory=dict)
    # Latest event time seen per publishing system.
    high_water: dict[str, UtcDatetime] = Field(default_factory=dict)
    jobs: list[Job] = Field(default_factory=list)
    # Start (ms) of each dedup bucket holding seen event ids (``e`` keys).
    seen_buckets: list[int] = Field(default_factory=list)
    # How many records, outstanding and closed commands are keyed below the subject.
    records: int = 0
    commands: int = 0
    closed: int = 0
    # Live records by "controller|system|category|purpose|basis" (the access
    # report's summaries without reading every record); bounded by the policy.
    tally: dict[str, int] = Field(default_factory=dict)
    # What the due indexes hold for this subject: its own ``n`` and ``m`` entries,
    # the latest housekeeping time indexed, and its ``d`` (timer) entry.
    due_ms: int | None = None
    housekeeping_ms: int | None = None
    housekeep_until: int | None = None
    timer_ms: int | None = None

    def open_jobs(self, kind: str | None = None, ref: str | None = None) -> list[Job]:
        return [
            j
            for j in self.jobs
            if (kind is None or j.kind == kind) and (ref is None or j.ref == ref)
        ]


M = TypeVar("M", bound=Frozen)


def replace(model: M, **update: object) -> M:
    """A validated copy of ``model`` with ``update`` applied (times are normalised
    to UTC milliseconds, as on the wire; ``model_copy`` would skip that)."""
    return type(model).model_validate({**dict(model), **update})


def tally_key(record: RecordState) -> str:
    return "|".join(
        (
            record.controller_id,
            record.system,
            record.category.value,
            record.purpose,
            record.legal_basis.value,
        )
    )
