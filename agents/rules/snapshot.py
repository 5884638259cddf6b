"""A whole subject read back from the store: for the privacy desk and for tests.

The rules never need this (they read what an event touches); the desk shows
everything held on a subject, and tests assert on it. ``read`` scans the
subject's namespaces in a store; ``from_entries`` builds it from (key, value)
pairs, e.g. the subject's entries in the state changelog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agents.rules.state import (
    ClosedCommand,
    ConsentState,
    ContractState,
    Hold,
    OutstandingCommand,
    RecordState,
    RequestState,
    SubjectHeader,
    Suppression,
)
from agents.store import keys
from agents.store.codec import decode
from agents.store.layer import Entries


@dataclass
class SubjectSnapshot:
    header: SubjectHeader
    records: dict[str, RecordState] = field(default_factory=dict)
    commands: dict[str, OutstandingCommand] = field(default_factory=dict)
    closed: dict[str, ClosedCommand] = field(default_factory=dict)
    # (request id, kind, item) -> raw value of the request's items
    items: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    seen: int = 0

    @property
    def subject_id(self) -> str:
        return self.header.subject_id

    @property
    def requests(self) -> dict[str, RequestState]:
        return self.header.requests

    @property
    def contracts(self) -> dict[str, ContractState]:
        return self.header.contracts

    @property
    def holds(self) -> dict[str, Hold]:
        return self.header.holds

    @property
    def consents(self) -> dict[str, ConsentState]:
        return self.header.consents

    @property
    def suppression(self) -> Suppression | None:
        return self.header.suppression

    @property
    def restricted(self) -> bool:
        return self.header.restricted

    @property
    def high_water(self) -> dict[str, datetime]:
        return self.header.high_water

    def request_items(self, request_id: str, kind: str) -> dict[str, bytes]:
        return {
            i: v for (r, k, i), v in sorted(self.items.items()) if r == request_id and k == kind
        }

    @classmethod
    def read(cls, entries: Entries, subject_id: str) -> SubjectSnapshot | None:
        pairs: list[tuple[bytes, bytes]] = []
        header = entries.get(keys.header(subject_id))
        if header is not None:
            pairs.append((keys.header(subject_id), header))
        for ns in (keys.RECORD, keys.COMMAND, keys.CLOSED, keys.ITEM, keys.SEEN):
            prefix = keys.subject_prefix(ns, subject_id)
            pairs.extend(entries.iterate(prefix, keys.end_of(prefix)))
        return cls.from_entries(subject_id, pairs)

    @classmethod
    def from_entries(
        cls, subject_id: str, pairs: Iterable[tuple[bytes, bytes]]
    ) -> SubjectSnapshot | None:
        """The subject's snapshot from its entries (None without a header)."""
        header: SubjectHeader | None = None
        snap = cls(header=SubjectHeader(subject_id=subject_id))
        for key, value in pairs:
            ns = key[:1]
            if ns == keys.HEADER:
                header = decode(SubjectHeader, key, value)
            elif ns == keys.RECORD:
                record = decode(RecordState, key, value)
                snap.records[record.key] = record
            elif ns == keys.COMMAND:
                tracked = decode(OutstandingCommand, key, value)
                snap.commands[tracked.command_id] = tracked
            elif ns == keys.CLOSED:
                snap.closed[keys.name_of(ns, subject_id, key)] = decode(ClosedCommand, key, value)
            elif ns == keys.ITEM:
                request_id, kind, item = keys.name_of(ns, subject_id, key).split("\x00", 2)
                snap.items[(request_id, kind, item)] = value
            elif ns == keys.SEEN:
                snap.seen += 1
        if header is None:
            return None
        snap.header = header
        return snap
