"""The privacy desk's CLI against a real broker and a real worker (N9-N13).

``lifecycle desk subject`` and ``lifecycle desk requests [--overdue]`` bring the
desk's read model (SQLite under the pipeline's var dir) up to date with the
worker's state changelog and the pipeline's topics, then answer from it; here
they run as subprocesses with the pipeline's environment, as the privacy desk
would run them. The worker
uses the demo policy (requests due 5 minutes after receipt) so that a request
received 5 minutes ago is overdue now.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.tools.downstream import Behaviour
from schemas.audit import AuditEvent
from schemas.base import DataCategory
from schemas.events import AccessRequested, ErasureRequested, RestrictionRequested
from tests.integration.events import desk_request, registered
from tests.integration.pipeline import (
    DEMO_POLICY,
    LIFECYCLE,
    Pipeline,
    pipelines,
    run_desk,
    wait_decided,
    wait_for,
)


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    yield from pipelines(kafka_bootstrap, tmp_path, policy_path=DEMO_POLICY)


def desk_output(pipeline: Pipeline, args: list[str], *wanted: str) -> str:
    """Run the desk until its output contains every ``wanted`` string: the table's
    changelog is written shortly after the worker's decision, not with it."""
    last: list[subprocess.CompletedProcess[str]] = []

    def check() -> bool:
        result = run_desk(pipeline, *args)
        last[:] = [result]
        return result.returncode == 0 and all(w in result.stdout for w in wanted)

    def message() -> str:
        if not last:
            return f"desk {args} never ran"
        r = last[0]
        return f"desk {args} never showed {wanted}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"

    try:
        wait_for(check, 90, "", alive=pipeline.process, interval=1.0)
    except AssertionError as exc:
        raise AssertionError(message()) from exc
    return last[0].stdout


def test_desk_shows_a_subjects_records_and_requests_and_lists_the_overdue_ones(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    # The CRM never answers: requests that need it stay open.
    pipeline.run_downstream("crm", Behaviour(silent=True))
    now = datetime.now(UTC)

    # Records first (their own input topic: wait until they are in the state, so that
    # the requests below find them).
    late, late_request = "cust-desk-late", "req-desk-erase"
    current, current_request = "cust-desk-now", "req-desk-restrict"
    held = [
        registered(late, "letter-9", "crm", DataCategory.CORRESPONDENCE),
        registered(current, "form-3", "crm", DataCategory.FORMS_SURVEYS),
    ]
    for event in held:
        pipeline.publish(event)
    wait_decided(pipeline, held, "records registered")
    # Overdue: an erasure received 5 minutes and 2 seconds ago (due 2 seconds ago).
    pipeline.publish(
        desk_request(
            ErasureRequested,
            late,
            late_request,
            event_id="ev-desk-erase",
            when=now - timedelta(minutes=5, seconds=2),
        )
    )
    # Open, not overdue: a restriction received now (due in 5 minutes).
    pipeline.publish(
        desk_request(
            RestrictionRequested,
            current,
            current_request,
            event_id="ev-desk-restrict",
            reason="accuracy contested",
        )
    )
    # Open, clock not started: an access request waiting for identity.
    waiting, waiting_request = "cust-desk-wait", "req-desk-access"
    pipeline.publish(
        desk_request(AccessRequested, waiting, waiting_request, event_id="ev-desk-access")
    )
    pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: any(
            e.decision == "request-overdue" and e.details.get("request-id") == late_request
            for e in es
        ),
        what="the erasure overdue",
    )

    shown = desk_output(pipeline, ["subject", late], "[overdue]", "delete -> crm")
    assert f"subject {late}\n" in shown
    assert "records held: 1" in shown
    assert "crm/letter-9  correspondence  basis=contract" in shown
    assert "open requests: 1" in shown
    (line,) = [row for row in shown.splitlines() if late_request in row and "erasure" in row]
    assert "[overdue]" in line
    assert "outstanding commands: 1" in shown
    assert f"request={late_request}" in shown
    # Nothing of the other subjects.
    assert current not in shown
    assert waiting not in shown

    shown = desk_output(pipeline, ["subject", waiting], waiting_request)
    assert "records held: 0" in shown
    (line,) = [row for row in shown.splitlines() if waiting_request in row]
    assert "awaiting_identity" in line
    assert "awaiting identity (clock not started)" in line
    assert "missing=one photographic ID" in line

    unknown = run_desk(pipeline, "subject", "cust-never-seen")
    assert unknown.returncode == 1
    assert "no state for subject cust-never-seen" in unknown.stderr

    everything = desk_output(pipeline, ["requests"], late_request, current_request, waiting_request)
    rows = {
        request_id: row
        for row in everything.splitlines()
        for request_id in (late_request, current_request, waiting_request)
        if request_id in row
    }
    assert rows[late_request].split()[1] == "overdue"
    assert rows[current_request].split()[1] == "due_7d"
    assert rows[waiting_request].startswith("awaiting-identity")
    # By due date, those awaiting identity last.
    lines = everything.splitlines()
    assert lines[0].startswith("DUE (UK)")
    position = {r: next(i for i, row in enumerate(lines) if r in row) for r in rows}
    assert position[late_request] < position[current_request] < position[waiting_request]

    overdue = desk_output(pipeline, ["requests", "--overdue"], late_request)
    assert current_request not in overdue
    assert waiting_request not in overdue
    (line,) = [row for row in overdue.splitlines() if late_request in row]
    assert line.split()[1:5] == ["overdue", late, late_request, "erasure"]
    # In progress, or failed once the silent CRM's command is escalated: open either way.
    assert line.split()[5] in ("in_progress", "failed")


def test_the_desk_names_the_app_id_setting_when_the_changelog_is_not_found(
    pipeline: Pipeline,
) -> None:
    env = {k: v for k, v in pipeline.env.items() if k != "LIFECYCLE_APP_ID"}
    result = subprocess.run(
        [str(LIFECYCLE), "desk", "requests"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "data-lifecycle-subjects-changelog" in result.stderr
    assert "LIFECYCLE_APP_ID" in result.stderr
