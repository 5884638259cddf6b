"""Duplicate detection over a time window set in the policy (``state.dedup_window``).

Each event id seen is an entry ``e / subject / bucket / event_id``, in buckets
of a quarter of the window by processing time; the header lists the live
buckets. A redelivered event is recognised if it comes back within the window
(at least; up to a window and a bucket); a bucket is dropped, a page at a time,
once it is older than that. A duplicate check reads one key per live bucket
(at most six), whatever the subject has seen.
"""

from __future__ import annotations

from agents.rules import limits
from agents.rules.context import Ctx, to_ms
from agents.store import keys
from agents.store.layer import scan


def _bucket_ms(ctx: Ctx) -> int:
    return int(ctx.policy.state.dedup_bucket.total_seconds() * 1000)


def is_duplicate(ctx: Ctx, event_id: str) -> bool:
    return any(
        ctx.layer.get(keys.seen(ctx.subject_id, bucket, event_id)) is not None
        for bucket in ctx.subject.seen_buckets
    )


def remember(ctx: Ctx, event_id: str) -> None:
    size = _bucket_ms(ctx)
    bucket = to_ms(ctx.now) // size * size
    if bucket not in ctx.subject.seen_buckets:
        ctx.subject.seen_buckets = sorted([*ctx.subject.seen_buckets, bucket])
    ctx.layer.put(keys.seen(ctx.subject_id, bucket, event_id), b"")


def expire(ctx: Ctx) -> None:
    """Drop buckets older than the window (a page of entries per step)."""
    size = _bucket_ms(ctx)
    window = int(ctx.policy.state.dedup_window.as_timedelta().total_seconds() * 1000)
    now = to_ms(ctx.now)
    for bucket in list(ctx.subject.seen_buckets):
        if bucket + size + window > now:
            continue
        prefix = keys.seen_bucket_prefix(ctx.subject_id, bucket)
        found = scan(ctx.layer, prefix, keys.end_of(prefix), limits.PAGE + 1)
        for key, _ in found[: limits.PAGE]:
            ctx.layer.delete(key)
        if len(found) > limits.PAGE:
            ctx.more = True
            return
        ctx.subject.seen_buckets = [b for b in ctx.subject.seen_buckets if b != bucket]
