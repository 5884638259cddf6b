"""N1 opt-out and suppression list, objection to direct marketing, N14 recordings."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.rules.testing import Harness
from schemas.base import Channel, DataCategory, DataSource, LegalBasis, ObjectionKind
from schemas.commands import Action
from schemas.events import (
    CallRecorded,
    ErasureRequested,
    MarketingOptOutReceived,
    ObjectionReceived,
)
from schemas.responses import ResponseStatus
from tests.unit.builders import NOTICE, register

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def _register(
    h: Harness, record_id: str, system: str, category: DataCategory, purpose: str, **kw: Any
) -> Any:
    """A row from a bought list (legitimate interests)."""
    return register(
        h,
        record_id,
        system,
        category,
        purpose,
        basis=LegalBasis.LEGITIMATE_INTERESTS,
        source=DataSource.LIST_BROKER,
        **kw,
    )


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ([Channel.EMAIL], "email"),
        ([Channel.SMS, Channel.PHONE], "phone,sms"),
        ([Channel.ALL], "all"),
        ([Channel.POST, Channel.ALL], "all"),
    ],
)
def test_opt_out_suppresses_every_marketing_system_at_once(
    channels: list[Channel], expected: str
) -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(MarketingOptOutReceived, channels=channels, source_system="marketing"))
    [cmd] = d.commands
    assert (cmd.action, cmd.target_system, cmd.rule_id) == (
        Action.SUPPRESS_MARKETING,
        "marketing-platform",
        "N1.opt-out",
    )
    assert cmd.parameters == {"channels": expected}
    assert cmd.issued_at == T0
    [audit] = d.audit
    assert (audit.decision, audit.rule_id, audit.command_ids_out) == (
        "marketing-suppressed",
        "N1.opt-out",
        [cmd.command_id],
    )
    assert d.state is not None
    assert d.state.suppression is not None
    assert d.state.suppression.since == T0


def test_suppression_channels_accumulate_and_persist() -> None:
    h = Harness(NOTICE, T0)
    for cmd in h.send(h.event(MarketingOptOutReceived, channels=[Channel.EMAIL])).commands:
        h.ack(cmd)
    h.clock.advance(timedelta(days=3))
    second = h.send(h.event(MarketingOptOutReceived, channels=[Channel.PHONE]))
    assert second.commands[0].parameters == {"channels": "email,phone"}
    assert second.commands[0].command_id != h.decisions[0].commands[0].command_id
    h.ack(second.commands[0])
    assert h.state is not None
    assert h.state.suppression is not None
    assert h.state.suppression.since == T0  # suppressed since the first opt-out


@pytest.mark.parametrize(
    ("record_id", "system", "category", "purpose", "re_added"),
    [
        ("imp-1", "marketing-platform", DataCategory.MARKETING_PROFILE, "sales-marketing", True),
        ("imp-2", "crm", DataCategory.PURCHASED_LIST, "sales-enquiries", True),  # list import
        ("form-1", "crm", DataCategory.FORMS_SURVEYS, "sales-marketing", True),  # a form
        ("inv-1", "billing-db", DataCategory.BILLING, "billing-accounting", False),
        ("mail-1", "crm", DataCategory.CORRESPONDENCE, "sales-enquiries", False),
    ],
)
def test_re_add_after_opt_out_is_suppressed_again(
    record_id: str, system: str, category: DataCategory, purpose: str, re_added: bool
) -> None:
    h = Harness(NOTICE, T0)
    for cmd in h.send(h.event(MarketingOptOutReceived, channels=[Channel.ALL])).commands:
        h.ack(cmd)
    h.clock.advance(timedelta(days=90))
    d = _register(h, record_id, system, category, purpose)
    decisions = [a.decision for a in d.audit]
    if not re_added:
        assert d.commands == []
        assert "re-add-suppressed" not in decisions
        return
    targets = {c.target_system for c in d.commands}
    assert targets == {"marketing-platform", system}
    assert all(
        c.action is Action.SUPPRESS_MARKETING
        and c.rule_id == "N1.re-add-suppressed"
        and c.record_ids == [record_id]
        and c.parameters == {"channels": "all"}
        for c in d.commands
    )
    assert "re-add-suppressed" in decisions


def test_marketing_record_without_opt_out_is_not_suppressed() -> None:
    h = Harness(NOTICE, T0)
    d = _register(h, "imp-1", "marketing-platform", DataCategory.PURCHASED_LIST, "sales-marketing")
    assert d.commands == []


def test_objection_to_direct_marketing_is_an_opt_out_on_all_channels() -> None:
    h = Harness(NOTICE, T0)
    d = h.send(
        h.event(ObjectionReceived, request_id="req-obj", kind=ObjectionKind.DIRECT_MARKETING)
    )
    [cmd] = d.commands
    assert (cmd.action, cmd.parameters, cmd.request_id) == (
        Action.SUPPRESS_MARKETING,
        {"channels": "all"},
        "req-obj",
    )
    # The subject is told at once; the answer is final when the system confirms.
    [first] = d.responses
    assert (first.status, first.request_id) == (ResponseStatus.IN_PROGRESS, "req-obj")
    done = h.ack(cmd)
    [response] = done.responses
    assert (response.status, response.request_id) == (ResponseStatus.COMPLETED, "req-obj")
    assert done.state is not None
    assert done.state.suppression is not None


def test_objection_to_profiling_is_not_an_opt_out() -> None:
    # Profiling objections are the rights workflow's (test_rights_workflows);
    # they must not suppress marketing.
    h = Harness(NOTICE, T0)
    d = h.send(
        h.event(ObjectionReceived, request_id="req-obj", kind=ObjectionKind.AUTOMATED_PROCESSING)
    )
    assert all(c.action is not Action.SUPPRESS_MARKETING for c in d.commands)
    assert h.state is not None
    assert h.state.suppression is None
    assert [a.decision for a in d.audit] == [
        "request-opened",
        "profiling-stopped",
        "request-completed",
    ]


def test_suppression_survives_erasure() -> None:
    h = Harness(NOTICE, T0)
    _register(h, "imp-1", "marketing-platform", DataCategory.PURCHASED_LIST, "sales-marketing")
    for cmd in h.send(h.event(MarketingOptOutReceived, channels=[Channel.EMAIL])).commands:
        h.ack(cmd)
    for cmd in h.send(h.event(ErasureRequested, request_id="req-1")).commands:
        h.ack(cmd)
    assert h.state is not None
    assert h.state.records == {}
    assert h.state.suppression is not None
    # A later list import still cannot re-add the person silently. (Later: a record
    # dating from the erasure's receipt or before would be erased under it.)
    h.clock.advance(timedelta(minutes=1))
    d = _register(h, "imp-2", "marketing-platform", DataCategory.PURCHASED_LIST, "sales-marketing")
    assert {c.action for c in d.commands} == {Action.SUPPRESS_MARKETING}


@pytest.mark.parametrize(
    ("system", "purpose", "deleted_from_marketing"),
    [
        ("call-recorder", "sales-marketing", False),  # marketing purpose refused
        ("marketing-platform", "sales-marketing", True),  # must not be there at all
        ("marketing-platform", "training-security", True),
    ],
)
def test_n14_recordings_never_for_marketing(
    system: str, purpose: str, deleted_from_marketing: bool
) -> None:
    h = Harness(NOTICE, T0)
    d = _register(h, "rec-9", system, DataCategory.CALL_RECORDING, purpose)
    assert d.state is not None
    record = d.state.records[f"{system}/rec-9"]
    assert record.purpose == "training-security"
    rules = {a.rule_id for a in d.audit}
    assert "N14.recordings-not-for-marketing" in rules
    if deleted_from_marketing:
        [cmd] = d.commands
        assert (cmd.action, cmd.target_system, cmd.rule_id) == (
            Action.DELETE,
            "marketing-platform",
            "N14.recordings-not-for-marketing",
        )
    else:
        assert d.commands == []
        assert record.due_at == T0 + timedelta(days=30)


def test_call_recorded_on_marketing_system_is_removed() -> None:
    h = Harness(NOTICE, T0)
    d = h.send(h.event(CallRecorded, recording_id="rec-1", system="marketing-platform"))
    assert [(c.action, c.target_system) for c in d.commands] == [
        (Action.DELETE, "marketing-platform")
    ]
