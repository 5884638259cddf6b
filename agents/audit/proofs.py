"""Completeness of proofs that span several audit events.

A decision whose facts do not fit one audit event is split into parts
(``part`` = ``i/n``, ``parts-digest``: ``agents.rules.auditing``); work that
goes a page at a time (an erasure of many records, a restriction, ...) audits
each page (``page`` = i, and ``pages`` = n on the last). ``ProofCheck`` is fed
a partition's audit events (as ``lifecycle audit verify`` reads them) and
names every proof with a part missing or altered, and every finished paged
decision with a page missing. Pages of work still running are not an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from agents.rules.auditing import parts_digest
from schemas.audit import AuditEvent

_MARKERS = ("part", "parts-digest")


@dataclass
class ProofCheck:
    _parts: dict[tuple[str, str, str], dict[int, AuditEvent]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    _totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _pages: dict[tuple[str, str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    _page_totals: dict[tuple[str, str, str], int] = field(default_factory=dict)
    checked: int = 0

    def add(self, event: AuditEvent) -> None:
        self.checked += 1
        details = event.details
        if "part" in details and "parts-digest" in details:
            i, n = (int(x) for x in details["part"].split("/", 1))
            key = (event.subject_ref, event.decision, details["parts-digest"])
            self._parts[key][i] = event
            self._totals[key] = n
        if "page" in details:
            ref = details.get("request-id") or details.get("hold-id") or event.rule_id
            key = (event.subject_ref, event.decision, ref)
            self._pages[key].add(int(details["page"]))
            if "pages" in details:
                self._page_totals[key] = int(details["pages"])

    def problems(self) -> list[str]:
        out: list[str] = []
        for key, found in sorted(self._parts.items()):
            _subject, decision, digest = key
            n = self._totals[key]
            missing = sorted(set(range(1, n + 1)) - set(found))
            if missing:
                out.append(f"{decision} {digest[:12]}: part(s) {missing} of {n} missing")
                continue
            details: list[tuple[str, str]] = []
            ids: list[str] = []
            for i in range(1, n + 1):
                event = found[i]
                details += [(k, v) for k, v in event.details.items() if k not in _MARKERS]
                ids += event.command_ids_out
            if parts_digest(details, ids) != digest:
                out.append(f"{decision} {digest[:12]}: parts do not match their digest")
        for key, n in sorted(self._page_totals.items()):
            _subject, decision, ref = key
            missing = sorted(set(range(1, n + 1)) - self._pages[key])
            if missing:
                out.append(f"{decision} {ref}: page(s) {missing} of {n} missing")
        return out
