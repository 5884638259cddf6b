"""The fault-injection suite as a pytest test: ``pytest -m chaos tests/chaos``.

``make chaos`` runs the same through ``python -m tests.chaos run``, which prints
the report as it ends; here the report is the assertion message.
"""

from __future__ import annotations

import pytest

from tests.chaos.config import ChaosConfig
from tests.chaos.harness import run_chaos


@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_no_accepted_event_lost_and_every_promise_kept_under_faults() -> None:
    report = run_chaos(ChaosConfig())
    if not report.ok:
        pytest.fail(report.render(), pytrace=False)
