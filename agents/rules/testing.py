"""Test support for the rules: build messages and drive ``decide`` on a fake clock.

Used by the unit tests and usable by anyone testing handlers::

    h = Harness(load_policy(NOTICE), datetime(2024, 1, 1, tzinfo=UTC))
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    h.clock.advance(timedelta(days=30))
    d = h.tick()            # the DELETE is in d.commands
    h.ack(d.commands[0])    # closes it; the record leaves the state
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any, TypeVar

from agents.clock import FakeClock
from agents.rules.context import Decision
from agents.rules.decide import Message, decide, next_due
from agents.rules.policy import Policy
from agents.rules.state import SubjectState
from schemas.commands import AckOutcome, Command, CommandAck
from schemas.events import Event
from schemas.internal import DueTick

E = TypeVar("E", bound=Event)


class Harness:
    """One subject's state, carried from decision to decision on a ``FakeClock``."""

    def __init__(self, policy: Policy, start: datetime, subject_id: str = "cust-1") -> None:
        self.policy = policy
        self.clock = FakeClock(start)
        self.subject_id = subject_id
        self.state: SubjectState | None = None
        self.decisions: list[Decision] = []
        self._ids = itertools.count(1)

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

    def send(self, message: Message) -> Decision:
        decision = decide(self.state, message, self.clock.now(), self.policy)
        # What the Faust table would do: store JSON, read it back.
        self.state = (
            None
            if decision.state is None
            else SubjectState.model_validate(decision.state.model_dump(mode="json"))
        )
        self.decisions.append(decision)
        return decision

    def tick(self) -> Decision:
        now = self.clock.now()
        return self.send(DueTick(subject_id=self.subject_id, due_at=now, sent_at=now))

    def next_due(self) -> datetime | None:
        return next_due(self.state)

    def ack(
        self, command: Command, outcome: AckOutcome = AckOutcome.DONE, system: str | None = None
    ) -> Decision:
        return self.send(
            CommandAck(
                command_id=command.command_id,
                subject_id=command.subject_id,
                system=system or command.target_system,
                outcome=outcome,
                acked_at=self.clock.now(),
            )
        )
