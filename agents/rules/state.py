"""Per-subject state kept in the Faust table (one entry per subject id).

``SubjectState`` is frozen and JSON-serialisable: the agent stores
``state.model_dump(mode="json")`` and reads it back with
``SubjectState.model_validate(...)``. The rules never mutate it; ``decide``
returns a new one.

What it holds is the minimum the rules need. Personal data values never enter
it: records are known by id, system, category and field *names*; records are
dropped from the state once their deletion is confirmed, so erased data does
not survive here (only the suppression list, kept records and request
outcomes remain).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import TypeVar

from pydantic import Field

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

# How many recently processed event ids (and closed command ids) are remembered
# for de-duplication. Redelivery happens within a consumer-group rebalance, so a
# few hundred per subject is ample.
MAX_PROCESSED_EVENT_IDS = 500
MAX_CLOSED_COMMAND_IDS = 500
MAX_EARLY_ACKS = 100

FINAL_REQUEST_STATUSES = frozenset(
    {ResponseStatus.COMPLETED, ResponseStatus.PARTIALLY_REFUSED, ResponseStatus.REFUSED}
)


class RecordStatus(StrEnum):
    HELD = "held"  # we hold it (not to be confused with a legal hold)
    DELETING = "deleting"  # a DELETE command is outstanding
    DELETED = "deleted"  # confirmed; such records are dropped from the state


def record_key(system: str, record_id: str) -> str:
    return f"{system}/{record_id}"


class RecordState(Frozen):
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
    # The retention rule governing it now and when that rule makes it due
    # (None: not due while e.g. a contract is active).
    rule_id: ShortText | None = None
    due_at: UtcDatetime | None = None
    status: RecordStatus = RecordStatus.HELD
    # Legal holds found blocking its (overdue) deletion, already audited.
    held_by: list[Identifier] = Field(default_factory=list)
    command_id: Identifier | None = None

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

    system: Slug
    command_id: Identifier
    export_reference: ShortText | None = None


class PortableRecord(Frozen):
    """A record a system exported for a portability request; held only until the
    response carrying it is sent, then dropped from the state."""

    system: Slug
    record: ExportedRecord


class RequestState(Frozen):
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
    exports: list[ExportNote] = Field(default_factory=list)
    portable: list[PortableRecord] = Field(default_factory=list)
    # Restriction: the records the restriction covers, and whether it is in force.
    record_keys: list[str] = Field(default_factory=list)
    restriction_active: bool = False

    @property
    def final(self) -> bool:
        return self.status in FINAL_REQUEST_STATUSES

    @property
    def awaiting_identity(self) -> bool:
        return self.identity_required and self.identity_verified_at is None


class OutstandingCommand(Frozen):
    """A command sent and not yet acknowledged DONE/NOT_HELD."""

    command: Command
    sent_at: UtcDatetime
    next_retry_at: UtcDatetime
    escalated: bool = False
    record_keys: list[str] = Field(default_factory=list)

    @property
    def command_id(self) -> str:
        return self.command.command_id


class SubjectState(Frozen):
    subject_id: Identifier
    records: dict[str, RecordState] = Field(default_factory=dict)
    contracts: dict[str, ContractState] = Field(default_factory=dict)
    suppression: Suppression | None = None
    holds: dict[str, Hold] = Field(default_factory=dict)
    consents: dict[str, ConsentState] = Field(default_factory=dict)
    requests: dict[str, RequestState] = Field(default_factory=dict)
    commands: dict[str, OutstandingCommand] = Field(default_factory=dict)
    restricted: bool = False
    processed_event_ids: list[str] = Field(default_factory=list)
    closed_command_ids: list[str] = Field(default_factory=list)
    # Acks that arrived before the command they answer (e.g. after a state
    # restore); applied when the command is issued.
    early_acks: dict[str, AckOutcome] = Field(default_factory=dict)
    # Latest event time seen per publishing system.
    high_water: dict[str, UtcDatetime] = Field(default_factory=dict)


M = TypeVar("M", bound=Frozen)


def replace(model: M, **update: object) -> M:
    """A validated copy of ``model`` with ``update`` applied (times are normalised
    to UTC milliseconds, as on the wire; ``model_copy`` would skip that)."""
    return type(model).model_validate({**dict(model), **update})
