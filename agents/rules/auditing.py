"""Audit facts, and how a long list of facts is split without losing any.

``AuditEntry`` details are ``ShortText`` (at most 1,000 characters) and an
audit event holds at most 100 of them, so a proof naming many records cannot
be one detail. ``render`` joins each list (sorted) and splits it at item
boundaries into details ``name``, ``name-2``, ``name-3``, ... of at most
1,000 characters each; if an entry's details (or command ids) still do not
fit one event they are spread over several entries of the same decision,
marked ``part`` = ``i/n`` and ``parts-digest`` = SHA-256 over every part's
details and command ids, so ``lifecycle audit verify`` can tell a complete
proof from one missing a part. Nothing is cut.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from schemas.base import Frozen, Identifier, ShortText, Slug, UtcDatetime

MAX_DETAIL = 1000
# Details per audit event (AuditEvent allows 100; two are kept for the part markers).
MAX_DETAILS = 90
MAX_COMMAND_IDS = 500


class AuditEntry(Frozen):
    """Un-chained audit facts; the audit writer adds the pseudonym and hash chain."""

    subject_id: Identifier
    controller_id: Slug
    rule_id: ShortText
    policy_version: ShortText
    decision: Slug
    event_ids_in: list[Identifier] = []
    command_ids_out: list[Identifier] = []
    event_time: UtcDatetime
    # Non-personal facts only: ids, systems, categories, counts, due times.
    details: dict[Slug, ShortText] = {}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _pieces(value: object) -> list[str]:
    """``value`` as one or more strings of at most MAX_DETAIL characters, in order."""
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(_text(v) for v in value)
        out: list[str] = []
        current = ""
        for item in items:
            for chunk in _split(item):
                joined = f"{current},{chunk}" if current else chunk
                if len(joined) > MAX_DETAIL:
                    out.append(current)
                    joined = chunk
                current = joined
        out.append(current or "-")
        return out
    return _split(_text(value) or "-")


def _split(text: str) -> list[str]:
    return [text[i : i + MAX_DETAIL] for i in range(0, len(text), MAX_DETAIL)] or ["-"]


def render(details: dict[str, object]) -> list[tuple[str, str]]:
    """Details as (key, text) pairs, every text within MAX_DETAIL characters."""
    out: list[tuple[str, str]] = []
    for name, value in details.items():
        key = name.replace("_", "-")
        for i, piece in enumerate(_pieces(value)):
            out.append((key if i == 0 else f"{key}-{i + 1}", piece))
    return out


def parts_digest(details: list[tuple[str, str]], command_ids: list[str]) -> str:
    """SHA-256 over a split entry's details (in key order) and command ids (in order)."""
    body = [sorted([k, v] for k, v in details), list(command_ids)]
    return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


def parts(
    details: list[tuple[str, str]], command_ids: list[str]
) -> list[tuple[dict[str, str], list[str]]]:
    """Split rendered details and command ids over as many entries as they need."""
    if len(details) <= MAX_DETAILS + 2 and len(command_ids) <= MAX_COMMAND_IDS:
        return [(dict(details), list(command_ids))]
    detail_parts = [details[i : i + MAX_DETAILS] for i in range(0, len(details), MAX_DETAILS)]
    id_parts = [
        command_ids[i : i + MAX_COMMAND_IDS] for i in range(0, len(command_ids), MAX_COMMAND_IDS)
    ]
    n = max(len(detail_parts), len(id_parts))
    digest = parts_digest(details, command_ids)
    out: list[tuple[dict[str, str], list[str]]] = []
    for i in range(n):
        d = dict(detail_parts[i]) if i < len(detail_parts) else {}
        d["part"] = f"{i + 1}/{n}"
        d["parts-digest"] = digest
        out.append((d, id_parts[i] if i < len(id_parts) else []))
    return out
