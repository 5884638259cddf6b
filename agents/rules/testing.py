"""Test support for the rules: build messages and drive ``decide`` on a fake clock.

Used by the unit tests, the benchmarks, and usable by anyone testing handlers::

    h = Harness(load_policy(NOTICE), datetime(2024, 1, 1, tzinfo=UTC))
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=30))
    d = h.tick()            # the DELETE is in d.commands
    h.ack(d.commands[0])    # closes it; the record leaves the state

The subject's state lives in a ``MemoryStore`` with the worker's layout. When a
decision leaves work for another step (``Decision.more``), the harness sends
the subject a tick at once, as the worker does, and ``send`` returns the steps
together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from agents.clock import FakeClock
from agents.rules.bookkeeping import holds_nothing
from agents.rules.context import AuditEntry, Ctx, Decision
from agents.rules.decide import Message, decide, header, next_due
from agents.rules.policy import Policy
from agents.rules.retention import schedule
from agents.rules.snapshot import SubjectSnapshot
from agents.rules.state import RecordState, SubjectHeader
from agents.store.layer import Write
from agents.store.memory import MemoryPartition, MemoryStore
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.commands import AckOutcome, Command, CommandAck
from schemas.events import Event
from schemas.internal import DueTick
from schemas.responses import RequestResponse

E = TypeVar("E", bound=Event)

# Steps one ``send`` follows before giving up (a runaway job is a bug, not a wait).
MAX_FOLLOW = 100_000


@dataclass(frozen=True)
class Step:
    """What a message led to (with the continuation steps it needed) and the
    subject's state after it (None when nothing but bookkeeping is left)."""

    commands: list[Command]
    audit: list[AuditEntry]
    responses: list[RequestResponse]
    writes: list[Write]
    state: SubjectSnapshot | None
    steps: int = 1
    decisions: list[Decision] = field(default_factory=list, repr=False)


class Harness:
    """One subject's state, carried from decision to decision on a ``FakeClock``."""

    def __init__(
        self,
        policy: Policy,
        start: datetime,
        subject_id: str = "cust-1",
        *,
        store: MemoryStore | None = None,
        partition: int = 0,
        follow: bool = True,
    ) -> None:
        self.policy = policy
        self.clock = FakeClock(start)
        self.subject_id = subject_id
        self.store = store or MemoryStore()
        self.partition = partition
        self.follow = follow
        self.decisions: list[Step] = []
        self._ids = itertools.count(1)

    @property
    def entries(self) -> MemoryPartition:
        return self.store.partition(self.partition)

    @property
    def state(self) -> SubjectSnapshot | None:
        snap = SubjectSnapshot.read(self.entries, self.subject_id)
        return None if snap is None or holds_nothing(snap.header) else snap

    def event(self, event_type: type[E], /, **fields: Any) -> E:
        """An event of ``event_type`` for this subject at the clock's time (overridable)."""
        data: dict[str, Any] = {
            "event_id": f"evt-{next(self._ids)}",
            "subject_id": self.subject_id,
            "source_system": "privacy-desk",
            "event_time": self.clock.now(),
            **fields,
        }
        return event_type.model_validate(data, context={"now": self.clock.now()})

    def decide(self, message: Message) -> Decision:
        """One decision, applied to the store (no continuation)."""
        decision = decide(self.entries, message, self.clock.now(), self.policy)
        self.store.apply(self.partition, decision.writes)
        return decision

    def send(self, message: Message) -> Step:
        decisions = [self.decide(message)]
        while self.follow and decisions[-1].more and len(decisions) < MAX_FOLLOW:
            now = self.clock.now()
            decisions.append(
                self.decide(DueTick(subject_id=self.subject_id, due_at=now, sent_at=now))
            )
        step = Step(
            commands=[c for d in decisions for c in d.commands],
            audit=[a for d in decisions for a in d.audit],
            responses=[r for d in decisions for r in d.responses],
            writes=[w for d in decisions for w in d.writes],
            state=self.state,
            steps=len(decisions),
            decisions=decisions,
        )
        self.decisions.append(step)
        return step

    def tick(self) -> Step:
        now = self.clock.now()
        return self.send(DueTick(subject_id=self.subject_id, due_at=now, sent_at=now))

    def next_due(self) -> datetime | None:
        return next_due(self.entries, self.subject_id)

    def entries_header(self) -> SubjectHeader:
        """The subject's stored header, bookkeeping included (raises if none)."""
        found = header(self.entries, self.subject_id)
        if found is None:
            raise LookupError(f"no header stored for {self.subject_id}")
        return found

    def ack(
        self, command: Command, outcome: AckOutcome = AckOutcome.DONE, system: str | None = None
    ) -> Step:
        return self.send(
            CommandAck(
                command_id=command.command_id,
                subject_id=command.subject_id,
                system=system or command.target_system,
                outcome=outcome,
                acked_at=self.clock.now(),
            )
        )


def seed_records(
    store: MemoryStore,
    policy: Policy,
    now: datetime,
    subject_id: str,
    count: int,
    *,
    partition: int = 0,
    system: str = "call-recorder",
    category: DataCategory = DataCategory.CALL_RECORDING,
    purpose: str = "training-security",
    legal_basis: LegalBasis = LegalBasis.LEGITIMATE_INTERESTS,
    prefix: str = "seed",
) -> None:
    """Give a subject ``count`` records at once, as if each had been registered (due
    times, indexes and counters included), without deciding ``count`` events: for
    benchmarks and tests of subjects that hold a great deal."""
    ctx = Ctx(
        store.partition(partition),
        subject_id=subject_id,
        policy=policy,
        now=now,
        event_time=now,
        event_ids_in=[],
    )
    for n in range(count):
        record = RecordState(
            record_id=f"{prefix}-{n:08d}",
            system=system,
            category=category,
            legal_basis=legal_basis,
            source=DataSource.OBSERVED,
            purpose=purpose,
            controller_id=policy.controller.id,
            provided_by_subject=False,
            registered_at=now,
            generation=f"{prefix}-evt-{n:08d}",
        )
        record = schedule(ctx, record)
        ctx.records[record.key] = record
    store.apply(partition, ctx.finish().writes)
