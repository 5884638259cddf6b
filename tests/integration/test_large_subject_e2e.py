"""One subject holding more than 5,000 records, on the real worker and broker (issue 10).

The subject grows one recording at a time through the worker (no seeding), so
its state is the keyed store the worker built itself. Its erasure goes a page
at a time (``PAGE`` records per step), sends DELETEs of at most ``CHUNK``
records, and is answered as completed once the reference downstream has
confirmed every one. The proof is the audit trail: the erasure's pages name
every record across their details and parts, and the checks of ``lifecycle
audit verify`` (chain intact, no part or page missing) pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.audit.verify import verify_partition
from agents.clock import SystemClock
from agents.rules import limits
from schemas.audit import AuditEvent
from schemas.commands import Action, Command
from schemas.events import ErasureRequested
from schemas.responses import RequestResponse, ResponseStatus
from tests.integration.events import call_recorded, desk_request
from tests.integration.pipeline import Pipeline, pipelines, subject_commands, wait_for
from tests.integration.topic_tail import Tail

SUBJECT = "cust-large-1"
RECORDS = 5_200  # past 5,000: eleven pages of an erasure
ERASED = "records-erased"


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    yield from pipelines(kafka_bootstrap, tmp_path)


def named_in(event: AuditEvent, name: str) -> list[str]:
    """The items an audit event lists under ``name``, however its details were split
    (``name``, ``name-2``, ...; agents/rules/auditing.py)."""
    return [
        item
        for key, value in event.details.items()
        if (key == name or (key.startswith(f"{name}-") and key[len(name) + 1 :].isdigit()))
        and value
        for item in value.split(",")
    ]


def test_a_subject_past_5000_records_is_erased_and_its_proof_names_every_record(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    pipeline.run_downstream("call-recorder")
    when = datetime.now(UTC) - timedelta(hours=1)  # kept for weeks: nothing is due by itself
    recordings = [f"rec-{n:05d}" for n in range(RECORDS)]
    pipeline.publish_many(
        call_recorded(SUBJECT, rid, event_id=f"ev-large-{rid}", when=when) for rid in recordings
    )
    audit = Tail(pipeline, pipeline.names.audit)
    answers = Tail(pipeline, pipeline.names.responses)
    try:

        def scheduled() -> int:
            return sum(
                isinstance(e, AuditEvent) and e.decision == "retention-scheduled"
                for e in audit.now()
            )

        wait_for(
            lambda: scheduled() >= RECORDS,
            240,
            f"{RECORDS} recordings decided",
            alive=pipeline.process,
        )

        request = desk_request(ErasureRequested, SUBJECT, "req-large-1", event_id="ev-large-erase")
        pipeline.publish(request)

        def mine() -> list[RequestResponse]:
            return [
                r
                for r in answers.now()
                if isinstance(r, RequestResponse) and r.request_id == request.request_id
            ]

        wait_for(
            lambda: any(r.status is ResponseStatus.COMPLETED for r in mine()),
            240,
            "the erasure answered as completed",
            alive=pipeline.process,
        )
        trail = [e for e in audit.now() if isinstance(e, AuditEvent)]
        answered = mine()
    finally:
        audit.close()
        answers.close()

    # The answer: in progress while the DELETEs were out, then completed, once.
    assert [r.status for r in answered] == [ResponseStatus.IN_PROGRESS, ResponseStatus.COMPLETED]

    # The commands: chunks of at most CHUNK records with distinct ids, every record once.
    deletes = {
        c.command_id: c
        for c in subject_commands(pipeline, "call-recorder", SUBJECT)
        if c.action is Action.DELETE
    }
    chunks: list[Command] = list(deletes.values())
    assert all(len(c.record_ids) <= limits.CHUNK for c in chunks)
    deleted = [r for c in chunks for r in c.record_ids]
    assert sorted(deleted) == recordings

    # The proof: every page of the erasure is in the trail, and together they name
    # every record erased and every DELETE sent.
    decided = [
        e
        for e in trail
        if e.decision == "erasure-decided" and e.details.get("request-id") == request.request_id
    ]
    pages = {int(e.details["page"]) for e in decided}
    [total] = [int(e.details["pages"]) for e in decided if "pages" in e.details]
    assert total == -(-RECORDS // limits.PAGE)
    assert pages == set(range(1, total + 1))
    named = [r for e in decided for r in named_in(e, ERASED)]
    assert sorted(named) == recordings
    assert {c for e in decided for c in e.command_ids_out} == set(deletes)

    # What `lifecycle audit verify` checks, on every audit partition: the chain is
    # intact and no proof split over parts or pages has a piece missing.
    key = pipeline.settings.audit_hmac_key.get_secret_value().encode()
    for partition in range(pipeline.partitions):
        result = verify_partition(
            pipeline.client_config,
            pipeline.names.audit,
            partition,
            pipeline.codec,
            SystemClock(),
            key,
        )
        assert result.broken is None, result.summary()
        assert result.incomplete == [], result.summary()
