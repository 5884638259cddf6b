"""Messages the pipeline sends to itself."""

from __future__ import annotations

from schemas.base import Frozen, Identifier, UtcDatetime


class DueTick(Frozen):
    """Wakes a subject whose earliest due time has passed.

    The timer may not write tables (Faust allows table writes only while an
    event is being processed), so it sends this to a topic co-partitioned with
    the input; the agent then decides in event context. A duplicate tick is
    harmless: the rules fire only what is due and not yet done.
    """

    subject_id: Identifier
    due_at: UtcDatetime
    sent_at: UtcDatetime
