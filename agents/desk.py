"""Privacy-desk inspection (N9-N13): what we hold on a subject, which requests are
open or overdue, and the answer a subject was sent.

Read-only. Sources:

* **Subject state**: the worker's Faust table ``subjects`` is backed by the
  compacted changelog topic ``<app_id>-subjects-changelog``, whose keys lay out
  each subject's header, records, commands and bookkeeping (``agents.store.keys``;
  a tombstone once an entry is gone). The desk reads every partition from the
  start to the high watermark, keeps the last value per key and groups the
  entries by subject (``latest_states``); a subject still in the previous
  one-value format is converted as the worker would. It is as fresh as the
  worker's last committed write; it does not need the worker to be running.
* **Answers**: ``<prefix>.responses`` (Avro ``RequestResponse``); the latest
  response of a request (by ``issued_at``) is rendered: an access report as
  HTML, a refusal as its letter, a portability export as its JSON.
* **Parked items**: ``<prefix>.dead-letter`` (Avro ``DeadLetter``); those with
  a ``failure_class`` decoded but could not be processed or delivered
  (runbook: LifecycleItemsParked). Only where they came from and why is
  shown, never the payload.

The formatting and filtering functions are pure and take ``SubjectSnapshot``
objects; the Kafka functions at the bottom are thin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.rights.deadlines import DeadlineBucket, deadline_bucket, uk_date
from agents.rights.report import AccessReport, refusal_text, render_access_report_html
from agents.rules.policy import Policy
from agents.rules.snapshot import SubjectSnapshot
from agents.store import keys, legacy
from agents.store.memory import MemoryStore
from schemas.deadletter import DeadLetter
from schemas.responses import RequestResponse, ResponseStatus

__all__ = [
    "RequestRow",
    "changelog_topic",
    "describe_subject",
    "format_parked",
    "format_requests",
    "latest_response",
    "latest_states",
    "open_requests",
    "read_dead_letters",
    "read_responses",
    "read_states",
    "render_response",
]


def changelog_topic(app_id: str) -> str:
    """The Faust changelog topic of the worker's ``subjects`` table."""
    return f"{app_id}-subjects-changelog"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


@dataclass(frozen=True)
class RequestRow:
    subject_id: str
    request_id: str
    request_type: str
    status: str
    received_at: datetime
    due_at: datetime | None  # None: the clock waits for identity
    bucket: DeadlineBucket | None
    pending_commands: int
    extended_months: int


def _rows(state: SubjectSnapshot, now: datetime) -> Iterator[RequestRow]:
    for request in state.requests.values():
        if request.final or request.placeholder:
            continue
        due = None if request.awaiting_identity else request.due_at
        yield RequestRow(
            subject_id=state.subject_id,
            request_id=request.request_id,
            request_type=request.request_type.value,
            status=request.status.value,
            received_at=request.received_at,
            due_at=due,
            bucket=None if due is None else deadline_bucket(due, now),
            pending_commands=request.pending,
            extended_months=request.extended_months,
        )


def open_requests(
    states: Iterable[SubjectSnapshot], now: datetime, *, overdue_only: bool = False
) -> list[RequestRow]:
    """Open requests (not final) by due date, those awaiting identity last."""
    rows = [row for state in states for row in _rows(state, now)]
    if overdue_only:
        rows = [r for r in rows if r.bucket == "overdue"]
    return sorted(
        rows,
        key=lambda r: (r.due_at is None, r.due_at or r.received_at, r.subject_id, r.request_id),
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in table
    )


def format_requests(rows: list[RequestRow]) -> str:
    if not rows:
        return "no open requests\n"
    header = ("DUE (UK)", "BUCKET", "SUBJECT", "REQUEST", "TYPE", "STATUS", "PENDING", "EXT")
    return _table(
        header,
        [
            (
                uk_date(r.due_at).isoformat() if r.due_at else "awaiting-identity",
                r.bucket or "-",
                r.subject_id,
                r.request_id,
                r.request_type,
                r.status,
                str(r.pending_commands),
                f"+{r.extended_months}m" if r.extended_months else "-",
            )
            for r in rows
        ],
    )


def format_parked(letters: Iterable[DeadLetter], *, include_undecodable: bool = False) -> str:
    """Parked items, oldest first: when, why, where from, whose, the reason.

    ``include_undecodable`` adds the dead letters of input that never decoded.
    """
    shown = sorted(
        (d for d in letters if include_undecodable or d.failure_class is not None),
        key=lambda d: (d.failed_at, d.topic, d.partition, d.offset),
    )
    if not shown:
        return "nothing parked\n"
    header = ("FAILED AT", "CLASS", "SOURCE", "SUBJECT", "REASON")
    return _table(
        header,
        [
            (
                _when(d.failed_at),
                d.failure_class.value if d.failure_class else f"undecodable:{d.reason_class.value}",
                f"{d.topic}/{d.partition}@{d.offset}",
                _subject(d.original_key),
                d.reason,
            )
            for d in shown
        ],
    )


def _subject(key: bytes | None) -> str:
    # The key of an input event is its subject id (what the desk works with).
    if key is None:
        return "-"
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "(binary key)"


def describe_subject(state: SubjectSnapshot, now: datetime) -> str:
    """What is held, consents, holds, restriction, open requests and outstanding commands."""
    lines = [f"subject {state.subject_id}"]
    lines.append(f"restricted: {'yes' if state.restricted else 'no'}")
    if state.suppression is not None:
        channels = ",".join(c.value for c in state.suppression.channels)
        lines.append(f"marketing suppressed since {_when(state.suppression.since)} ({channels})")
    lines.append(f"records held: {len(state.records)}")
    for key in sorted(state.records):
        r = state.records[key]
        lines.append(
            f"  {r.system}/{r.record_id}  {r.category.value}  basis={r.legal_basis.value}  "
            f"purpose={r.purpose}  source={r.source.value}  controller={r.controller_id}  "
            f"status={r.status.value}  delete-due={_when(r.due_at)}"
            + (f"  held-by={','.join(r.held_by)}" if r.held_by else "")
        )
    if state.consents:
        lines.append("consents:")
        for purpose, consent in sorted(state.consents.items()):
            lines.append(
                f"  {purpose}  given={_when(consent.given_at)}  "
                f"withdrawn={_when(consent.withdrawn_at)}"
            )
    if state.holds:
        lines.append("legal holds:")
        for hold_id, hold in sorted(state.holds.items()):
            scope = ",".join([c.value for c in hold.categories] + hold.record_ids) or "all"
            lines.append(
                f"  {hold_id}  case={hold.case_reference}  scope={scope}  "
                f"placed={_when(hold.placed_at)}  reason={hold.reason}"
            )
    rows = open_requests([state], now)
    lines.append(f"open requests: {len(rows)}")
    for row in rows:
        due = _when(row.due_at) if row.due_at else "awaiting identity (clock not started)"
        request = state.requests[row.request_id]
        lines.append(
            f"  {row.request_id}  {row.request_type}  {row.status}  due={due}  "
            f"[{row.bucket or '-'}]  pending-commands={row.pending_commands}"
            + (
                f"  missing={'; '.join(request.missing_evidence)}"
                if request.missing_evidence
                else ""
            )
        )
    closed = [r for r in state.requests.values() if r.final]
    for request in sorted(closed, key=lambda r: r.received_at):
        lines.append(
            f"  (closed) {request.request_id}  {request.request_type.value}  "
            f"{request.status.value}  closed={_when(request.closed_at)}"
        )
    lines.append(f"outstanding commands: {len(state.commands)}")
    for cid in sorted(state.commands):
        tracked = state.commands[cid]
        c = tracked.command
        lines.append(
            f"  {cid}  {c.action.value} -> {c.target_system}  attempt={c.attempt}  "
            f"sent={_when(tracked.sent_at)}  "
            + ("ESCALATED" if tracked.escalated else f"next-retry={_when(tracked.next_retry_at)}")
            + (f"  request={c.request_id}" if c.request_id else "")
        )
    return "\n".join(lines) + "\n"


def latest_states(
    messages: Iterable[tuple[bytes | None, bytes | None]], policy: Policy, now: datetime
) -> dict[str, SubjectSnapshot]:
    """Reduce changelog (key, value) pairs in log order to each subject's current state.

    ``policy`` and ``now`` are used only to convert a subject still stored in the
    previous format (as the worker does when it meets it)."""
    table: dict[bytes, bytes] = {}
    for key, value in messages:
        if key is None:
            continue
        if value is None:  # a tombstone (index entries have empty values, not none)
            table.pop(key, None)
        else:
            table[key] = value
    store = MemoryStore()
    entries = store.partition(0)
    for key, value in table.items():
        if keys.is_legacy(key):
            subject_id = key.decode()
            if keys.header(subject_id) not in table:
                entries.apply(legacy.convert(value, subject_id=subject_id, policy=policy, now=now))
        else:
            entries.apply([(key, value)])
    subjects = sorted(
        {keys.subject_of(k) or "" for k in entries.data if k[:1] == keys.HEADER} - {""}
    )
    out: dict[str, SubjectSnapshot] = {}
    for subject_id in subjects:
        snapshot = SubjectSnapshot.read(entries, subject_id)
        if snapshot is not None:
            out[subject_id] = snapshot
    return out


def latest_response(
    responses: Iterable[RequestResponse], request_id: str
) -> RequestResponse | None:
    """The request's latest response: the newest ``issued_at``, the later in log order on
    a tie (one decision can emit two, e.g. ``in_progress`` then ``completed``)."""
    latest: RequestResponse | None = None
    for response in responses:
        if response.request_id == request_id and (
            latest is None or response.issued_at >= latest.issued_at
        ):
            latest = response
    return latest


def render_response(response: RequestResponse) -> tuple[str, str]:
    """(kind, text) to hand to the subject: ``html`` for an access report,
    ``text`` for a refusal letter, ``json`` for a portability export.
    Raises ``ValueError`` when the response has nothing to render yet."""
    body: Any = json.loads(response.body_json) if response.body_json else None
    if isinstance(body, dict) and body.get("kind") == "refusal":
        return "text", str(body["text"])
    if isinstance(body, dict) and body.get("kind") == "portability":
        if body.get("too_large"):
            return "json", json.dumps(body, indent=2, ensure_ascii=False)
        return "json", str(body["json"])
    if isinstance(body, dict) and "report_version" in body:
        report = AccessReport.model_validate(body)
        return "html", render_access_report_html(report)
    if response.status in (ResponseStatus.REFUSED, ResponseStatus.PARTIALLY_REFUSED):
        return "text", refusal_text(
            request_type=response.request_type,
            request_id=response.request_id,
            reasons=response.reasons,
            kept=response.kept,
            partial=response.status is ResponseStatus.PARTIALLY_REFUSED,
        )
    raise ValueError(
        f"request {response.request_id} is {response.status.value}: nothing to render yet"
    )


# -- Kafka (thin; needs a broker) ------------------------------------------------------------


def _read_topic(
    consumer_config: dict[str, str], topic: str, timeout: float = 10.0
) -> Iterator[tuple[bytes | None, bytes | None]]:  # pragma: no cover - needs a broker
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **consumer_config,
            "group.id": "privacy-desk",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise LookupError(f"topic {topic} not found")
        for partition in sorted(described.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if low >= high:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            offset = low
            while offset < high:
                msg = consumer.poll(timeout)
                if msg is None:
                    raise TimeoutError(f"{topic}[{partition}] stalled at offset {offset}")
                at = msg.offset()
                if msg.error() or at is None:
                    continue
                offset = at + 1
                yield msg.key(), msg.value()
    finally:
        consumer.close()


def read_states(
    consumer_config: dict[str, str], app_id: str, policy: Policy, now: datetime
) -> dict[str, SubjectSnapshot]:  # pragma: no cover - needs a broker
    return latest_states(_read_topic(consumer_config, changelog_topic(app_id)), policy, now)


def read_dead_letters(
    consumer_config: dict[str, str], topic: str, decode: Any
) -> Iterator[DeadLetter]:  # pragma: no cover - needs a broker
    """``decode(value) -> model``; undecodable messages are skipped."""
    for _key, value in _read_topic(consumer_config, topic):
        try:
            model = decode(value)
        except Exception:  # noqa: S112 - a bad message is not the desk's to fix
            continue
        if isinstance(model, DeadLetter):
            yield model


def read_responses(
    consumer_config: dict[str, str], topic: str, decode: Any
) -> Iterator[RequestResponse]:  # pragma: no cover - needs a broker
    """``decode(value) -> model``; undecodable messages are skipped."""
    for _key, value in _read_topic(consumer_config, topic):
        try:
            model = decode(value)
        except Exception:  # noqa: S112 - a bad message is not the desk's to fix
            continue
        if isinstance(model, RequestResponse):
            yield model
