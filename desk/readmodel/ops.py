"""Row operations: what a projection asks the store to do with one message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Upsert:
    """Insert ``row`` into ``table``, or replace the row with the same primary key."""

    table: str
    row: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    """Delete the rows of ``table`` whose columns equal ``match`` (e.g. one subject's)."""

    table: str
    match: dict[str, Any]


@dataclass(frozen=True)
class ForgetSubject:
    """The pipeline keeps nothing on this subject any more: drop everything the read
    model holds on it (state, answers, commands, acks), as of ``at``."""

    subject_id: str
    at: datetime


RowOp = Upsert | Delete | ForgetSubject


class Unreadable(Exception):
    """A message the projection cannot read; ``reason`` never quotes the payload."""
