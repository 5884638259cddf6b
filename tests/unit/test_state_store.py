"""The state store's machinery: overlays, versioned values, the previous format,
and quarantine of values that cannot be read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.clock import FakeClock
from agents.rules.decide import next_due
from agents.rules.snapshot import SubjectSnapshot
from agents.rules.state import ITEM_KEPT, ITEM_PENDING, RecordState
from agents.rules.testing import Harness
from agents.runtime.handler import Handler, RawMessage
from agents.runtime.metrics import LifecycleMetrics
from agents.store import keys, legacy
from agents.store.codec import (
    UnreadableState,
    decode,
    encode,
    register_upgrade,
    unregister_upgrade,
)
from agents.store.layer import Layer, scan
from agents.store.memory import MemoryPartition, MemoryStateStore
from schemas.commands import AckOutcome, CommandAck
from schemas.deadletter import DeadLetter, FailureClass
from schemas.events import CallRecorded
from streams.codec import Codec
from streams.topics import TopicNames
from tests.unit.builders import NOTICE
from tests.unit.test_handler import FakeAudit, Sent

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
NAMES = TopicNames("t")
CODEC = Codec()

# -- layers -----------------------------------------------------------------------


def test_a_layer_reads_its_writes_over_the_base_and_scans_in_order() -> None:
    base = MemoryPartition()
    base.apply([(b"a", b"1"), (b"c", b"3"), (b"e", b"5")])
    layer = Layer(base)
    layer.put(b"b", b"2")
    layer.put(b"c", b"33")
    layer.delete(b"e")
    assert (layer.get(b"a"), layer.get(b"c"), layer.get(b"e")) == (b"1", b"33", None)
    assert list(layer.iterate(b"", b"\xff")) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"33")]
    assert scan(layer, b"b", b"z", 1) == [(b"b", b"2")]
    assert base.get(b"e") == b"5"  # the base is only read


class Endless(MemoryPartition):
    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        n = 0
        while True:
            n += 1
            yield b"k%09d" % n, b""


def test_a_scan_with_a_limit_reads_no_further_than_it_needs() -> None:
    assert len(scan(Layer(Endless()), b"", b"\xff", 3)) == 3


# -- versioned values ----------------------------------------------------------------


def _record(**update: Any) -> RecordState:
    data: dict[str, Any] = {
        "record_id": "rec-1",
        "system": "call-recorder",
        "category": "call_recording",
        "legal_basis": "legitimate_interests",
        "source": "observed",
        "purpose": "training-security",
        "controller_id": "smartcomms",
        "provided_by_subject": False,
        "registered_at": T0,
        **update,
    }
    return RecordState.model_validate(data)


def test_a_current_value_round_trips() -> None:
    record = _record(generation="evt-1")
    assert decode(RecordState, b"k", encode(record)) == record


def test_an_older_version_is_upgraded_when_read() -> None:
    # A hypothetical version 0 that called the generation "registered_by".
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["generation"] = data.pop("registered_by")
        return {**data, "v": 1}

    old = json.loads(encode(_record()))
    old.pop("generation")
    old.update({"v": 0, "registered_by": "evt-7"})
    register_upgrade(RecordState, 0, upgrade)
    try:
        assert decode(RecordState, b"k", json.dumps(old).encode()).generation == "evt-7"
    finally:
        unregister_upgrade(RecordState, 0)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x00\x01garbage", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"v": 99}).encode(), "format version 99 is newer than 1"),
        (json.dumps({"v": 0}).encode(), "no upgrade from format version 0"),
        (json.dumps({"v": 1, "record_id": "cust@example.com"}).encode(), "invalid at"),
    ],
)
def test_an_unreadable_value_says_why_without_quoting_it(raw: bytes, why: str) -> None:
    with pytest.raises(UnreadableState) as caught:
        decode(RecordState, b"r\x00cust-1\x00x", raw)
    assert why in caught.value.reason
    assert "example.com" not in caught.value.reason
    assert (caught.value.key, caught.value.raw) == (b"r\x00cust-1\x00x", raw)


# -- the previous format ----------------------------------------------------------------

DELETE_ID = "cmd-00000000000000000000000000000001"


def _format0() -> bytes:
    """A subject as the previous format stored it: one JSON value."""
    at = "2024-01-01T09:00:00Z"
    recording = {
        "record_id": "rec-1",
        "system": "call-recorder",
        "category": "call_recording",
        "legal_basis": "legitimate_interests",
        "source": "observed",
        "purpose": "training-security",
        "controller_id": "smartcomms",
        "contract_id": None,
        "provided_by_subject": False,
        "fields": [],
        "registered_at": at,
        "rule_id": "N7.call-recordings",
        "due_at": "2024-01-31T09:00:00Z",
        "status": "held",
        "held_by": [],
        "command_id": None,
    }
    form = {
        **recording,
        "record_id": "form-1",
        "system": "crm",
        "category": "forms_surveys",
        "purpose": "sales-enquiries",
        "source": "subject",
        "provided_by_subject": True,
        "rule_id": "N1.no-contract-default",
        "due_at": "2026-01-01T09:00:00Z",
        "status": "deleting",
        "command_id": DELETE_ID,
    }
    command = {
        "command_id": DELETE_ID,
        "action": "delete",
        "target_system": "crm",
        "subject_id": "cust-1",
        "controller_id": "smartcomms",
        "record_ids": ["form-1"],
        "categories": ["forms_surveys"],
        "rule_id": "N9.erasure",
        "request_id": "req-1",
        "issued_at": at,
        "deadline": "2024-01-01T10:00:00Z",
        "attempt": 1,
        "policy_version": "notice-2024.1",
        "parameters": {},
    }
    request = {
        "request_id": "req-1",
        "request_type": "erasure",
        "controller_id": "smartcomms",
        "event_id": "evt-9",
        "received_at": at,
        "due_at": "2024-02-01T23:59:59.999000Z",
        "warn_at": "2024-01-25T23:59:59.999000Z",
        "status": "in_progress",
        "pending_command_ids": [DELETE_ID],
        "kept": [
            {
                "record_id": "inv-1",
                "system": "billing-db",
                "category": "billing",
                "reason": "N6.legal-obligation: kept",
            }
        ],
        "reasons": [],
        "warned": False,
        "overdue": False,
        "closed_at": None,
    }
    state = {
        "subject_id": "cust-1",
        "records": {"call-recorder/rec-1": recording, "crm/form-1": form},
        "contracts": {},
        "suppression": {"since": at, "channels": ["all"]},
        "holds": {},
        "consents": {},
        "requests": {"req-1": request},
        "commands": {
            DELETE_ID: {
                "command": command,
                "sent_at": at,
                "next_retry_at": "2024-01-01T10:00:00Z",
                "escalated": False,
                "record_keys": ["crm/form-1"],
            }
        },
        "restricted": False,
        "processed_event_ids": ["evt-1", "evt-9"],
        "closed_command_ids": ["cmd-old"],
        "early_acks": {},
        "high_water": {"telephony": at},
    }
    return json.dumps(state).encode()


def _migrated() -> Harness:
    h = Harness(NOTICE, T0 + timedelta(minutes=5))
    h.entries.apply(legacy.convert(_format0(), subject_id="cust-1", policy=NOTICE, now=T0))
    return h


def test_a_previous_format_state_converts_to_keyed_entries() -> None:
    h = _migrated()
    state = h.state
    assert state is not None
    assert set(state.records) == {"call-recorder/rec-1", "crm/form-1"}
    assert state.suppression is not None
    assert state.requests["req-1"].pending == 1
    assert state.requests["req-1"].kept_count == 1
    assert set(state.request_items("req-1", ITEM_PENDING)) == {DELETE_ID}
    assert set(state.request_items("req-1", ITEM_KEPT)) == {"billing-db/inv-1"}
    assert state.commands[DELETE_ID].waiters == ["req-1"]
    assert "cmd-old" in state.closed
    # The old value is deleted with the conversion.
    writes = legacy.convert(_format0(), subject_id="cust-1", policy=NOTICE, now=T0)
    assert writes[-1] == (b"cust-1", None)
    # The recording's deletion is scheduled in the new due index.
    assert h.next_due() == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)  # the DELETE's retry


def test_a_converted_subject_carries_on_where_it_was() -> None:
    h = _migrated()
    # The outstanding erasure completes when its DELETE is acknowledged.
    done = h.send(
        CommandAck(
            command_id=DELETE_ID,
            subject_id="cust-1",
            system="crm",
            outcome=AckOutcome.DONE,
            acked_at=h.clock.now(),
        )
    )
    [response] = done.responses
    assert response.status.value == "partially_refused"
    assert [k.record_id for k in response.kept] == ["inv-1"]
    # An event it had processed is still recognised as a duplicate.
    again = h.event(CallRecorded, recording_id="rec-1", system="call-recorder", event_id="evt-1")
    assert [a.decision for a in h.send(again).audit] == ["duplicate-ignored"]
    # The recording is deleted at its time, under its old (generation-less) command id.
    h.clock.set(datetime(2024, 1, 31, 9, 0, tzinfo=UTC))
    [delete] = h.tick().commands
    assert delete.record_ids == ["rec-1"]


def test_a_previous_format_value_that_cannot_be_read_is_unreadable() -> None:
    with pytest.raises(UnreadableState, match="format-0"):
        legacy.convert(b'{"subject_id": "cust-1", "records": 7}', subject_id="cust-1",
                       policy=NOTICE, now=T0)  # fmt: skip


# -- the worker meets the previous format and unreadable values --------------------------


def _handler() -> tuple[Handler, MemoryStateStore, Sent, LifecycleMetrics]:
    store = MemoryStateStore()
    sent = Sent()
    metrics = LifecycleMetrics.create(CollectorRegistry(), version="t", policy_version="t")
    handler = Handler(
        codec=CODEC,
        policy=NOTICE,
        clock=FakeClock(T0 + timedelta(minutes=5)),
        names=NAMES,
        metrics=metrics,
        store=store,
        audit=FakeAudit(sent),
        send=sent,
        state_topic="app-subjects-changelog",
    )
    return handler, store, sent, metrics


def _recording(subject: str, event_id: str) -> RawMessage:
    event = CallRecorded(
        event_id=event_id,
        subject_id=subject,
        source_system="telephony",
        event_time=T0,
        recording_id=f"rec-{event_id}",
        system="call-recorder",
    )
    return RawMessage(NAMES.input("telephony"), 0, 0, subject.encode(), CODEC.encode(event))


def test_the_worker_converts_a_previous_format_subject_when_it_meets_it() -> None:
    handler, store, _sent, _ = _handler()
    store.apply(0, [(b"cust-1", _format0())])
    asyncio.run(handler.handle(_recording("cust-1", "evt-20")))
    entries = store.entries(0)
    assert entries.get(b"cust-1") is None
    state = SubjectSnapshot.read(entries, "cust-1")
    assert state is not None
    assert {"call-recorder/rec-1", "crm/form-1", "call-recorder/rec-evt-20"} == set(state.records)
    assert next_due(entries, "cust-1") is not None


def _parked(topic: str) -> dict[str, str]:
    return {"topic": topic, "failure_class": "state_unreadable"}


def test_an_unreadable_header_is_quarantined_and_the_batch_goes_on() -> None:
    handler, store, sent, metrics = _handler()
    store.apply(0, [(keys.header("cust-1"), b'{"v": 7, "subject_id": "cust-1"}')])
    asyncio.run(
        handler.handle_batch(
            [
                _recording("cust-1", "evt-1"),
                _recording("cust-1", "evt-2"),
                _recording("cust-2", "evt-3"),
            ]
        )
    )
    dead: list[DeadLetter] = sent.on(NAMES.dead_letter)
    # The value once (with its key, for repair), and each message of the subject.
    assert [d.topic for d in dead] == [
        "app-subjects-changelog",
        NAMES.input("telephony"),
        NAMES.input("telephony"),
    ]
    assert dead[0].original_key == keys.header("cust-1")
    assert "format version 7 is newer" in dead[0].reason
    assert "stored state is unreadable" in dead[1].reason
    assert {d.failure_class for d in dead} == {FailureClass.STATE_UNREADABLE}
    parked = metrics.registry.get_sample_value
    assert parked("lifecycle_items_parked_total", _parked(NAMES.input("telephony"))) == 2
    assert parked("lifecycle_items_parked_total", _parked("app-subjects-changelog")) == 1
    # The stored value is left for repair; the other subject was decided.
    assert store.entries(0).get(keys.header("cust-1")) == b'{"v": 7, "subject_id": "cust-1"}'
    assert SubjectSnapshot.read(store.entries(0), "cust-2") is not None


def test_an_unreadable_record_met_in_a_scan_is_quarantined_too() -> None:
    h = Harness(NOTICE, T0)
    h.send(h.event(CallRecorded, recording_id="rec-1", system="call-recorder"))
    key = keys.keyed(keys.RECORD, "cust-1", "call-recorder/rec-1")
    h.entries.apply([(key, b"{not json")])
    h.clock.advance(timedelta(days=30))
    with pytest.raises(UnreadableState) as caught:
        h.tick()
    assert caught.value.key == key


def test_a_previous_format_value_beside_keyed_state_is_parked_not_applied() -> None:
    handler, store, sent, _ = _handler()
    asyncio.run(handler.handle(_recording("cust-1", "evt-1")))  # keyed state exists
    store.apply(0, [(b"cust-1", _format0())])  # an old worker wrote too (unsupported)
    asyncio.run(handler.handle(_recording("cust-1", "evt-2")))
    [parked] = sent.on(NAMES.dead_letter)
    assert (parked.original_key, parked.original_value) == (b"cust-1", _format0())
    assert store.entries(0).get(b"cust-1") is None
    state = SubjectSnapshot.read(store.entries(0), "cust-1")
    assert state is not None
    assert set(state.records) == {"call-recorder/rec-evt-1", "call-recorder/rec-evt-2"}
