"""Plain-text views for the CLI (``lifecycle desk subject|requests``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agents.rights.deadlines import uk_date
from desk.readmodel.queries import RequestRow, SubjectView


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _table(table: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in table
    )


def format_parked(rows: list[Any]) -> str:
    """Parked items (``dead_letters`` rows): when, why, where from, whose, the reason;
    never the payload (the read model does not keep it)."""
    if not rows:
        return "nothing parked\n"
    header = ("FAILED AT", "CLASS", "SOURCE", "SUBJECT", "REASON")
    return _table(
        [
            header,
            *(
                (
                    _when(d.failed_at),
                    d.failure_class or f"undecodable:{d.reason_class}",
                    f"{d.source_topic}/{d.source_partition}@{d.source_offset}",
                    d.subject_id or "-",
                    d.reason,
                )
                for d in rows
            ),
        ]
    )


def format_requests(rows: list[RequestRow]) -> str:
    if not rows:
        return "no open requests\n"
    header = ("DUE (UK)", "BUCKET", "SUBJECT", "REQUEST", "TYPE", "STATUS", "PENDING", "EXT")
    table = [header] + [
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
    ]
    return _table(table)


def describe_subject(view: SubjectView) -> str:
    """What is held, consents, holds, restriction, requests and outstanding commands."""
    lines = [f"subject {view.subject_id}"]
    lines.append(f"restricted: {'yes' if view.restricted else 'no'}")
    if view.suppressed_since is not None:
        channels = ",".join(view.suppression_channels)
        lines.append(f"marketing suppressed since {_when(view.suppressed_since)} ({channels})")
    lines.append(f"records held: {len(view.records)}")
    for r in view.records:
        held_by = view.held_by.get(f"{r.system}/{r.record_id}", [])
        lines.append(
            f"  {r.system}/{r.record_id}  {r.category}  basis={r.legal_basis}  "
            f"purpose={r.purpose}  source={r.source}  controller={r.controller_id}  "
            f"status={r.status}  delete-due={_when(r.due_at)}"
            + (f"  held-by={','.join(held_by)}" if held_by else "")
        )
    if view.consents:
        lines.append("consents:")
        for c in view.consents:
            lines.append(
                f"  {c.purpose}  given={_when(c.given_at)}  withdrawn={_when(c.withdrawn_at)}"
            )
    if view.holds:
        lines.append("legal holds:")
        for hold in view.holds:
            scope = ",".join([*hold["categories"], *hold["record_ids"]]) or "all"
            lines.append(
                f"  {hold['hold_id']}  case={hold['case_reference']}  scope={scope}  "
                f"placed={_when(hold['placed_at'])}  reason={hold['reason']}"
            )
    open_rows = sorted(
        view.open_requests,
        key=lambda r: (r.due_at is None, r.due_at or r.received_at, r.request_id),
    )
    lines.append(f"open requests: {len(open_rows)}")
    for row in open_rows:
        due = _when(row.due_at) if row.due_at else "awaiting identity (clock not started)"
        lines.append(
            f"  {row.request_id}  {row.request_type}  {row.status}  due={due}  "
            f"[{row.bucket or '-'}]  pending-commands={row.pending_commands}"
            + (f"  missing={'; '.join(row.missing_evidence)}" if row.missing_evidence else "")
        )
    for row in sorted(view.closed_requests, key=lambda r: r.received_at):
        lines.append(
            f"  (closed) {row.request_id}  {row.request_type}  {row.status}  "
            f"closed={_when(row.closed_at)}"
        )
    outstanding = view.outstanding
    lines.append(f"outstanding commands: {len(outstanding)}")
    for cmd in sorted(outstanding, key=lambda x: x.command_id):
        lines.append(
            f"  {cmd.command_id}  {cmd.action} -> {cmd.target_system}  attempt={cmd.attempt}  "
            f"sent={_when(cmd.sent_at)}  "
            + ("ESCALATED" if cmd.escalated else f"next-retry={_when(cmd.next_retry_at)}")
            + (f"  request={cmd.request_id}" if cmd.request_id else "")
            + (f"  acks={','.join(a.outcome for a in cmd.acks)}" if cmd.acks else "")
        )
    return "\n".join(lines) + "\n"
