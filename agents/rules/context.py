"""The working context of one decision, and what a decision returns.

``Ctx`` reads the subject's state through a ``Layer`` over the store's
entries: ``ctx.subject`` is the subject's header (mutable for this decision),
``ctx.records``, ``ctx.commands`` and ``ctx.closed`` are typed views of the
subject's keyed entries (get, set, delete, scan in key order). Nothing is
copied up front: an event that touches one record reads one record.
``Ctx.finish`` keeps the indexes in step with what changed (due items, the
timer entry, counters, metrics entries) and returns the writes, ordered so
that a crash part-way leaves a state a replay can continue from (docs/state.md).
Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from agents.rules import limits
from agents.rules.auditing import AuditEntry, parts, render
from agents.rules.policy import Policy
from agents.rules.state import (
    ClosedCommand,
    OutstandingCommand,
    RecordState,
    RecordStatus,
    RequestState,
    SubjectHeader,
    tally_key,
)
from agents.store import keys
from agents.store.codec import decode, encode
from agents.store.layer import Entries, Layer, Write, scan
from schemas.commands import Command
from schemas.events import DEFAULT_CONTROLLER
from schemas.responses import RequestResponse

__all__ = ["AuditEntry", "Ctx", "Decision", "Notes", "Table"]

V = TypeVar("V", bound=BaseModel)


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass
class Notes:
    """What the worker counts in its metrics, noted by the rules as it happens."""

    requests_opened: list[str] = field(default_factory=list)
    requests_closed: list[tuple[str, str]] = field(default_factory=list)
    # (system, action, outcome, seconds since the command was first sent)
    acks: list[tuple[str, str, str, float]] = field(default_factory=list)
    # (system, purpose) of each record registered on withdrawn consent (N4).
    without_consent: list[tuple[str, str]] = field(default_factory=list)
    # (system, request type) of each record reported late for a request (N9).
    late_records: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    writes: list[Write]
    commands: list[Command]
    audit: list[AuditEntry]
    responses: list[RequestResponse]
    # More work is waiting (a page of a long job, more due items): tick again now.
    more: bool = False
    notes: Notes = field(default_factory=Notes)
    subject_id: str = ""


@dataclass(frozen=True)
class DueIndex:
    """How a table's entries are indexed by due time: ``due(entry)`` (ms or None)
    under ``kind`` in the due namespace ``ns`` (``n`` or ``m``)."""

    due: Callable[[Any], int | None]
    kind: str
    ns: bytes = keys.DUE


class Table(Generic[V]):
    """The subject's entries of one namespace, as models, through the decision's layer.

    With a ``DueIndex``, every write moves the entry's due item at once, so a due
    time set earlier in a decision is seen by the same decision's sweep."""

    def __init__(
        self,
        layer: Layer,
        ns: bytes,
        subject_id: str,
        model: type[V],
        index: DueIndex | None = None,
    ) -> None:
        self.layer = layer
        self.model = model
        self.subject_id = subject_id
        self.index = index
        self.prefix = keys.subject_prefix(ns, subject_id)
        self._cache: dict[str, V | None] = {}
        # The value before this decision of every entry it wrote.
        self.before: dict[str, V | None] = {}

    def _key(self, name: str) -> bytes:
        return self.prefix + name.encode()

    def get(self, name: str) -> V | None:
        if name in self._cache:
            return self._cache[name]
        key = self._key(name)
        raw = self.layer.get(key)
        value = None if raw is None else decode(self.model, key, raw)
        self._cache[name] = value
        return value

    def __getitem__(self, name: str) -> V:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __setitem__(self, name: str, value: V) -> None:
        self._remember(name)
        self._reindex(name, self.get(name), value)
        self._cache[name] = value
        self.layer.put(self._key(name), encode(value))

    def __delitem__(self, name: str) -> None:
        old = self.get(name)
        if old is None:
            raise KeyError(name)
        self._remember(name)
        self._reindex(name, old, None)
        self._cache[name] = None
        self.layer.delete(self._key(name))

    def _reindex(self, name: str, old: V | None, new: V | None) -> None:
        if self.index is None:
            return
        before = None if old is None else self.index.due(old)
        after = None if new is None else self.index.due(new)
        if before == after:
            return
        i = self.index
        if before is not None:
            self.layer.delete(keys.due(self.subject_id, before, i.kind, name, i.ns))
        if after is not None:
            self.layer.put(keys.due(self.subject_id, after, i.kind, name, i.ns), b"")

    def pop(self, name: str, default: V | None = None) -> V | None:
        value = self.get(name)
        if value is None:
            return default
        del self[name]
        return value

    def _remember(self, name: str) -> None:
        if name not in self.before:
            self.before[name] = self.get(name)

    def scan(self, *, after: str | None = None, limit: int, prefix: str = "") -> list[V]:
        """Up to ``limit`` entries whose name starts with ``prefix``, after ``after``, in order."""
        low = self.prefix + prefix.encode()
        start = max(low, self._key(after) + keys.SEP) if after is not None else low
        out: list[V] = []
        for key, raw in self.layer.iterate(start, keys.end_of(low)):
            name = key[len(self.prefix) :].decode()
            cached = self._cache.get(name)
            value = cached if cached is not None else decode(self.model, key, raw)
            self._cache[name] = value
            out.append(value)
            if len(out) >= limit:
                break
        return out

    def changes(self) -> list[tuple[str, V | None, V | None]]:
        """(name, before, after) of every entry written in this decision."""
        return [(n, b, self._cache.get(n)) for n, b in self.before.items()]


class Ctx:
    def __init__(
        self,
        entries: Entries,
        *,
        subject_id: str,
        policy: Policy,
        now: datetime,
        event_time: datetime,
        event_ids_in: list[str],
    ) -> None:
        self.policy = policy
        self.now = now
        self.subject_id = subject_id
        self.event_time = event_time
        self.event_ids_in = event_ids_in
        self.layer = Layer(entries)
        self._header_key = keys.header(subject_id)
        self._header_raw = entries.get(self._header_key)
        self.existed = self._header_raw is not None
        self.subject: SubjectHeader = (
            decode(SubjectHeader, self._header_key, self._header_raw)
            if self._header_raw is not None
            else SubjectHeader(subject_id=subject_id)
        )
        if self.subject.subject_id != subject_id:
            raise ValueError(f"state of {self.subject.subject_id} given a message for {subject_id}")
        self._requests_before = dict(self.subject.requests)
        keep = policy.state.closed_commands_kept_for.as_timedelta()
        self.records: Table[RecordState] = Table(
            self.layer,
            keys.RECORD,
            subject_id,
            RecordState,
            DueIndex(record_due, keys.DUE_RECORD),
        )
        self.commands: Table[OutstandingCommand] = Table(
            self.layer,
            keys.COMMAND,
            subject_id,
            OutstandingCommand,
            DueIndex(command_due, keys.DUE_COMMAND),
        )
        self.closed: Table[ClosedCommand] = Table(
            self.layer,
            keys.CLOSED,
            subject_id,
            ClosedCommand,
            DueIndex(lambda c: closed_due(c, keep), keys.DUE_CLOSED, keys.HOUSEKEEPING),
        )
        self.out_commands: list[Command] = []
        self.out_audit: list[AuditEntry] = []
        self.out_responses: list[RequestResponse] = []
        self.notes = Notes()
        self.more = False
        # Records this step may still page through (jobs share it).
        self.budget = limits.PAGE
        # Record keys registered (or re-registered) in this decision.
        self.registered: list[str] = []

    @classmethod
    def open(
        cls,
        entries: Entries,
        *,
        subject_id: str,
        policy: Policy,
        now: datetime,
        event_time: datetime,
        event_ids_in: list[str],
    ) -> Ctx:
        return cls(
            entries,
            subject_id=subject_id,
            policy=policy,
            now=now,
            event_time=event_time,
            event_ids_in=event_ids_in,
        )

    # -- request items, held records, seen events ------------------------------------

    def item_key(self, request_id: str, kind: str, item: str) -> bytes:
        return keys.item_prefix(self.subject_id, request_id, kind) + item.encode()

    def item_get(self, request_id: str, kind: str, item: str) -> bytes | None:
        return self.layer.get(self.item_key(request_id, kind, item))

    def item_put(self, request_id: str, kind: str, item: str, value: bytes = b"") -> None:
        self.layer.put(self.item_key(request_id, kind, item), value)

    def item_delete(self, request_id: str, kind: str, item: str) -> None:
        self.layer.delete(self.item_key(request_id, kind, item))

    def items(
        self, request_id: str, kind: str, *, after: str | None = None, limit: int
    ) -> list[tuple[str, bytes]]:
        """(item, value) of a request's items of ``kind``, in item order."""
        prefix = keys.item_prefix(self.subject_id, request_id, kind)
        start = prefix + after.encode() + keys.SEP if after is not None else prefix
        return [
            (k[len(prefix) :].decode(), v)
            for k, v in scan(self.layer, start, keys.end_of(prefix), limit)
        ]

    def all_items(self, request_id: str, *, limit: int) -> list[bytes]:
        """Keys of any kind of items of a request (to forget them)."""
        prefix = keys.request_items_prefix(self.subject_id, request_id)
        return [k for k, _ in scan(self.layer, prefix, keys.end_of(prefix), limit)]

    def mark_held(self, hold_id: str, record_key: str) -> None:
        self.layer.put(keys.held_prefix(self.subject_id, hold_id) + record_key.encode(), b"")

    def unmark_held(self, hold_id: str, record_key: str) -> None:
        self.layer.delete(keys.held_prefix(self.subject_id, hold_id) + record_key.encode())

    def held_records(self, hold_id: str, *, limit: int) -> list[str]:
        prefix = keys.held_prefix(self.subject_id, hold_id)
        return [
            k[len(prefix) :].decode()
            for k, _ in scan(self.layer, prefix, keys.end_of(prefix), limit)
        ]

    # -- due items --------------------------------------------------------------------

    def due_items(self, *, limit: int, ns: bytes = keys.DUE) -> list[tuple[int, str, str]]:
        """(due ms, kind, item) of the subject's items due at or before now, earliest
        first, from the rules' due index (or, with ``ns``, the housekeeping one)."""
        prefix = keys.subject_prefix(ns, self.subject_id)
        stop = prefix + keys.be64(to_ms(self.now) + 1)
        return [
            keys.parse_due(self.subject_id, k) for k, _ in scan(self.layer, prefix, stop, limit)
        ]

    def drop_due(self, ms: int, kind: str, item: str, ns: bytes = keys.DUE) -> None:
        """Forget a due item whose entry no longer calls for it (self-healing index)."""
        self.layer.delete(keys.due(self.subject_id, ms, kind, item, ns))

    # -- audit --------------------------------------------------------------------------

    @property
    def any_contract_active(self) -> bool:
        return any(c.active for c in self.subject.contracts.values())

    def audit(
        self,
        rule_id: str,
        decision: str,
        *,
        controller_id: str | None = None,
        command_ids: list[str] | tuple[str, ...] = (),
        **details: object,
    ) -> AuditEntry:
        """Record a decision; long lists become several details or parts, never cut."""
        entries = [
            AuditEntry(
                subject_id=self.subject_id,
                controller_id=controller_id or DEFAULT_CONTROLLER,
                rule_id=rule_id,
                policy_version=self.policy.version,
                decision=decision,
                event_ids_in=list(self.event_ids_in),
                command_ids_out=ids,
                event_time=self.event_time,
                details=rendered,
            )
            for rendered, ids in parts(render(details), list(command_ids))
        ]
        self.out_audit.extend(entries)
        return entries[0]

    # -- finishing ---------------------------------------------------------------------

    def finish(self) -> Decision:
        from agents.rules import bookkeeping  # late: it reads the rules' due functions

        writes = bookkeeping.finish(self)
        return Decision(
            writes=writes,
            commands=self.out_commands,
            audit=self.out_audit,
            responses=self.out_responses,
            more=self.more,
            notes=self.notes,
            subject_id=self.subject_id,
        )

    @property
    def header_key(self) -> bytes:
        return self._header_key

    @property
    def header_raw(self) -> bytes | None:
        return self._header_raw

    @property
    def requests_before(self) -> dict[str, RequestState]:
        return self._requests_before


def record_due(record: RecordState | None) -> int | None:
    """When a record's deletion is due in the index (None: not scheduled)."""
    if record is None or record.status is not RecordStatus.HELD or record.held_by:
        return None
    return None if record.due_at is None else to_ms(record.due_at)


def command_due(tracked: OutstandingCommand | None) -> int | None:
    if tracked is None or tracked.escalated:
        return None
    return to_ms(tracked.next_retry_at)


def closed_due(closed: ClosedCommand | None, keep: timedelta) -> int | None:
    return None if closed is None else to_ms(closed.closed_at + keep)


def tally_change(
    tally: dict[str, int], before: RecordState | None, after: RecordState | None
) -> None:
    for record, delta in ((before, -1), (after, 1)):
        if record is None:
            continue
        key = tally_key(record)
        tally[key] = tally.get(key, 0) + delta
        if tally[key] <= 0:
            del tally[key]
