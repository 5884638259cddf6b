"""N13: extensions and deadline decisions use event time, not processing time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.rules.testing import Harness
from schemas.base import DataCategory
from schemas.events import ErasureRequested, RequestExtended
from tests.unit.builders import NOTICE, register

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)  # due 2024-04-04, end of the UK day
DUE = datetime(2024, 4, 4, 22, 59, 59, 999_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("decided", "processed", "outcome"),
    [
        # decided in time, processed in time
        (DUE - timedelta(days=1), DUE - timedelta(days=1), "request-extended"),
        # decided in time, processed three days late (after the overdue alert fired)
        (DUE - timedelta(hours=1), DUE + timedelta(days=3), "request-extended"),
        # decided after the due date: refused however soon it is processed
        (DUE + timedelta(minutes=1), DUE + timedelta(minutes=2), "extension-refused"),
    ],
)
def test_extension_is_judged_by_when_it_was_decided(
    decided: datetime, processed: datetime, outcome: str
) -> None:
    h = Harness(NOTICE, T0)
    register(h, "form-1", "crm", DataCategory.FORMS_SURVEYS)
    h.send(h.event(ErasureRequested, request_id="r-1"))
    h.clock.set(processed)
    h.tick()  # the worker's timer got there first: overdue is flagged if past the due time
    d = h.send(
        h.event(RequestExtended, request_id="r-1", months=1, reason="complex", event_time=decided)
    )
    assert [a.decision for a in d.audit if a.rule_id == "N13.extension"] == [outcome]
    assert h.state is not None
    request = h.state.requests["r-1"]
    extended = outcome == "request-extended"
    assert request.extended_months == (1 if extended else 0)
    assert request.overdue is (not extended and processed > DUE)
