"""Handler registry: which function decides on which message type.

To add a handler (e.g. for ``AccessRequested``), write in a module under
``agents/rules``::

    from agents.rules.context import Ctx
    from agents.rules.registry import handles
    from schemas.events import AccessRequested

    @handles(AccessRequested)
    def on_access(ctx: Ctx, event: AccessRequested) -> None:
        ...  # read/replace state through ctx (ctx.subject.requests, ctx.records[key],
             # ...), issue commands with agents.rules.commands.issue, audit with
             # ctx.audit, open/answer requests with agents.rules.requests; work over
             # all of a subject's records goes a page at a time (agents.rules.jobs)

and import that module in ``agents/rules/decide.py`` beside the other handler
modules (``from agents.rules import erasure as _erasure``) so it registers.
One handler per message type; registering a second one for the same type
raises at import time. Handlers must be pure: no clock, no I/O; use
``ctx.now`` and the event's own time. ``decide`` already de-duplicates events
by id, and after the handler runs it fires whatever is due (retention,
retries, request deadlines), so a handler only records facts and issues what
its message itself calls for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from agents.rules.context import Ctx

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Ctx, Any], None]

_HANDLERS: dict[type[BaseModel], Handler] = {}


def handles(
    message_type: type[M],
) -> Callable[[Callable[[Ctx, M], None]], Callable[[Ctx, M], None]]:
    """Register the decorated function as the handler of ``message_type``."""

    def register(fn: Callable[[Ctx, M], None]) -> Callable[[Ctx, M], None]:
        if message_type in _HANDLERS:
            raise ValueError(
                f"{message_type.__name__} already handled by {_HANDLERS[message_type].__qualname__}"
            )
        _HANDLERS[message_type] = fn
        return fn

    return register


def handler_for(message_type: type[BaseModel]) -> Handler | None:
    """The handler for this type, or for its nearest registered base class."""
    for klass in message_type.__mro__:
        if klass in _HANDLERS:
            return _HANDLERS[klass]
    return None


def handled_types() -> list[type[BaseModel]]:
    return list(_HANDLERS)
