"""The working context of one decision, and what a decision returns.

``Ctx`` is a mutable copy of a ``SubjectState`` plus the outputs collected so
far. Handlers change it in place (replacing the frozen entries they update);
``Ctx.to_state()`` freezes it again. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agents.rules.policy import Policy
from agents.rules.state import (
    ConsentState,
    ContractState,
    Hold,
    OutstandingCommand,
    RecordState,
    RequestState,
    SubjectState,
    Suppression,
)
from schemas.base import Frozen, Identifier, ShortText, Slug, UtcDatetime
from schemas.commands import AckOutcome, Command
from schemas.events import DEFAULT_CONTROLLER
from schemas.responses import RequestResponse

_MAX_DETAIL = 1000


class AuditEntry(Frozen):
    """Un-chained audit facts; the audit writer adds the pseudonym and hash chain."""

    subject_id: Identifier
    controller_id: Slug
    rule_id: ShortText
    policy_version: ShortText
    decision: Slug
    event_ids_in: list[Identifier] = []
    command_ids_out: list[Identifier] = []
    event_time: UtcDatetime
    # Non-personal facts only: ids, systems, categories, counts, due times.
    details: dict[Slug, ShortText] = {}


@dataclass(frozen=True)
class Decision:
    state: SubjectState | None  # None: delete the table entry
    commands: list[Command]
    audit: list[AuditEntry]
    responses: list[RequestResponse]


def _detail(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, list | tuple | set | frozenset):
        text = ",".join(sorted(str(v) for v in value))
    else:
        text = str(value)
    text = text or "-"
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


@dataclass
class Ctx:
    policy: Policy
    now: datetime
    subject_id: str
    event_time: datetime
    event_ids_in: list[str]
    records: dict[str, RecordState] = field(default_factory=dict)
    contracts: dict[str, ContractState] = field(default_factory=dict)
    suppression: Suppression | None = None
    holds: dict[str, Hold] = field(default_factory=dict)
    consents: dict[str, ConsentState] = field(default_factory=dict)
    requests: dict[str, RequestState] = field(default_factory=dict)
    commands: dict[str, OutstandingCommand] = field(default_factory=dict)
    restricted: bool = False
    processed_event_ids: list[str] = field(default_factory=list)
    closed_command_ids: list[str] = field(default_factory=list)
    early_acks: dict[str, AckOutcome] = field(default_factory=dict)
    high_water: dict[str, datetime] = field(default_factory=dict)
    out_commands: list[Command] = field(default_factory=list)
    out_audit: list[AuditEntry] = field(default_factory=list)
    out_responses: list[RequestResponse] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        state: SubjectState | None,
        *,
        subject_id: str,
        policy: Policy,
        now: datetime,
        event_time: datetime,
        event_ids_in: list[str],
    ) -> Ctx:
        ctx = cls(policy, now, subject_id, event_time, event_ids_in)
        if state is not None:
            ctx.records = dict(state.records)
            ctx.contracts = dict(state.contracts)
            ctx.suppression = state.suppression
            ctx.holds = dict(state.holds)
            ctx.consents = dict(state.consents)
            ctx.requests = dict(state.requests)
            ctx.commands = dict(state.commands)
            ctx.restricted = state.restricted
            ctx.processed_event_ids = list(state.processed_event_ids)
            ctx.closed_command_ids = list(state.closed_command_ids)
            ctx.early_acks = dict(state.early_acks)
            ctx.high_water = dict(state.high_water)
        return ctx

    def to_state(self) -> SubjectState:
        return SubjectState(
            subject_id=self.subject_id,
            records=self.records,
            contracts=self.contracts,
            suppression=self.suppression,
            holds=self.holds,
            consents=self.consents,
            requests=self.requests,
            commands=self.commands,
            restricted=self.restricted,
            processed_event_ids=self.processed_event_ids,
            closed_command_ids=self.closed_command_ids,
            early_acks=self.early_acks,
            high_water=self.high_water,
        )

    @property
    def is_empty(self) -> bool:
        """Nothing left worth keeping: the table entry can be deleted."""
        return not (
            self.records
            or self.contracts
            or self.suppression
            or self.holds
            or self.consents
            or self.requests
            or self.commands
            or self.restricted
            or self.early_acks
        )

    @property
    def any_contract_active(self) -> bool:
        return any(c.active for c in self.contracts.values())

    def audit(
        self,
        rule_id: str,
        decision: str,
        *,
        controller_id: str | None = None,
        command_ids: list[str] | tuple[str, ...] = (),
        **details: object,
    ) -> AuditEntry:
        entry = AuditEntry(
            subject_id=self.subject_id,
            controller_id=controller_id or DEFAULT_CONTROLLER,
            rule_id=rule_id,
            policy_version=self.policy.version,
            decision=decision,
            event_ids_in=list(self.event_ids_in),
            command_ids_out=list(command_ids),
            event_time=self.event_time,
            details={k.replace("_", "-"): _detail(v) for k, v in details.items()},
        )
        self.out_audit.append(entry)
        return entry
