"""N4, consent binds: a record registered on consent that was withdrawn (none given
since) is stopped, or deleted per policy, at once; audited under its rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.rules.consent import N4_CONSENT_BINDS
from agents.rules.policy import ConsentEnforcement, ConsentSettings, Policy
from agents.rules.testing import Harness, Step
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.commands import Action
from schemas.events import ConsentGiven, ConsentWithdrawn
from tests.unit.builders import NOTICE, register

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def _policy(enforcement: ConsentEnforcement) -> Policy:
    return NOTICE.model_copy(update={"consent": ConsentSettings(after_withdrawal=enforcement)})


def _web(h: Harness, record_id: str, basis: LegalBasis = LegalBasis.CONSENT) -> Step:
    step = register(
        h,
        record_id,
        "web-analytics",
        DataCategory.WEBSITE_VISITS,
        "website-analytics",
        basis=basis,
        source=DataSource.OBSERVED,
    )
    assert isinstance(step, Step)
    return step


# (consent events before the registration, basis, policy, expected command, audited)
CASES = [
    ("withdrawn", LegalBasis.CONSENT, ConsentEnforcement.STOP_PROCESSING, Action.STOP_PROCESSING),
    ("withdrawn", LegalBasis.CONSENT, ConsentEnforcement.DELETE, Action.DELETE),
    ("given-withdrawn-given", LegalBasis.CONSENT, ConsentEnforcement.STOP_PROCESSING, None),
    ("given", LegalBasis.CONSENT, ConsentEnforcement.STOP_PROCESSING, None),
    ("none", LegalBasis.CONSENT, ConsentEnforcement.STOP_PROCESSING, None),
    ("withdrawn", LegalBasis.LEGITIMATE_INTERESTS, ConsentEnforcement.STOP_PROCESSING, None),
]


@pytest.mark.parametrize(("history", "basis", "enforcement", "action"), CASES)
def test_record_on_withdrawn_consent_gets_a_command_at_once(
    history: str, basis: LegalBasis, enforcement: ConsentEnforcement, action: Action | None
) -> None:
    h = Harness(_policy(enforcement), T0)
    for step in history.split("-"):
        if step == "given":
            h.send(h.event(ConsentGiven, purpose="website-analytics"))
        elif step == "withdrawn":
            h.send(h.event(ConsentWithdrawn, purpose="website-analytics"))
        h.clock.advance(timedelta(minutes=1))
    d = _web(h, "web-9", basis)
    bound = [a for a in d.audit if a.rule_id == N4_CONSENT_BINDS]
    commands = d.commands
    if action is None:
        assert bound == []
        assert commands == []
        return
    [command] = commands
    assert (command.action, command.target_system, command.record_ids, command.rule_id) == (
        action,
        "web-analytics",
        ["web-9"],
        N4_CONSENT_BINDS,
    )
    [audit] = bound
    assert audit.decision == "processing-without-consent"
    assert audit.command_ids_out == [command.command_id]
    assert audit.details["system"] == "web-analytics"
    assert audit.details["purpose"] == "website-analytics"
    [note] = [n for dec in d.decisions for n in dec.notes.without_consent]
    assert note == ("web-analytics", "website-analytics")


def test_a_repeated_registration_after_the_stop_was_confirmed_sends_nothing_again() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(ConsentWithdrawn, purpose="website-analytics"))
    first = _web(h, "web-9")
    [stop] = first.commands
    h.ack(stop)
    again = _web(h, "web-9")
    assert again.commands == []
    assert [a.decision for a in again.audit if a.rule_id == N4_CONSENT_BINDS] == []
