"""The answer a subject was sent, rendered from the response as stored.

An access report's body is rendered to HTML (every value escaped), a refusal
as its letter, a portability export as its JSON (or CSV).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from agents.rights.report import AccessReport, refusal_text, render_access_report_html
from schemas.base import RequestType
from schemas.responses import KeptItem

Kind = Literal["html", "text", "json", "csv"]
MEDIA: dict[Kind, str] = {
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}
EXTENSION: dict[Kind, str] = {"html": "html", "text": "txt", "json": "json", "csv": "csv"}


class NothingToRender(ValueError):
    """The response carries no document (yet), or it was forgotten."""


@dataclass(frozen=True)
class Answer:
    kind: Kind
    text: str

    @property
    def media_type(self) -> str:
        return MEDIA[self.kind]


def _body(row: Any) -> Any:
    return json.loads(row.body_json) if row.body_json else None


def kinds(row: Any) -> list[Kind]:
    """The documents a response (a ``responses`` row) can be rendered to."""
    body = _body(row)
    if isinstance(body, dict) and body.get("kind") == "portability":
        return ["json"] if body.get("too_large") or not body.get("csv") else ["json", "csv"]
    if isinstance(body, dict) and body.get("kind") == "refusal":
        return ["text"]
    if isinstance(body, dict) and "report_version" in body:
        return ["html"]
    if row.status in ("refused", "partially_refused"):
        return ["text"]
    return []


def render(row: Any, kind: Kind | None = None) -> Answer:
    """Render a ``responses`` row; ``NothingToRender`` says why when it cannot."""
    available = kinds(row)
    if not available:
        why = (
            f"its body was forgotten ({row.body_forgotten})"
            if row.body_forgotten
            else (f"it is {row.status}")
        )
        raise NothingToRender(f"request {row.request_id} has nothing to render: {why}")
    chosen = kind or available[0]
    if chosen not in available:
        raise NothingToRender(f"request {row.request_id} has no {chosen} document")
    body = _body(row)
    if isinstance(body, dict) and body.get("kind") == "portability":
        if body.get("too_large"):
            return Answer("json", json.dumps(body, indent=2, ensure_ascii=False))
        return Answer(chosen, str(body[chosen]))
    if isinstance(body, dict) and body.get("kind") == "refusal":
        return Answer("text", str(body["text"]))
    if isinstance(body, dict) and "report_version" in body:
        return Answer("html", render_access_report_html(AccessReport.model_validate(body)))
    return Answer(
        "text",
        refusal_text(
            request_type=RequestType(row.request_type),
            request_id=row.request_id,
            reasons=json.loads(row.reasons or "[]"),
            kept=[KeptItem.model_validate(k) for k in json.loads(row.kept or "[]")],
            partial=row.status == "partially_refused",
        ),
    )
