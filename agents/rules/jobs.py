"""Work that spans a subject's records, done a page per step.

An erasure, a restriction, a contract's end or a hold's release concerns every
record of the subject. Such work is a ``Job`` in the subject's header: each
step (the decision on the triggering event, then on the ticks the worker sends
at once while work is left) pages through at most ``limits.PAGE`` records from
the job's cursor and saves the cursor. A subject with fewer records than a page
is done in the triggering decision, exactly as if there were no paging.

A job kind registers its step with ``@step(kind)``: ``fn(ctx, job) -> job |
None`` returns the job with its new cursor, or None when it is done.
"""

from __future__ import annotations

from collections.abc import Callable

from agents.rules import limits
from agents.rules.context import Ctx
from agents.rules.state import Job, RecordState, replace

Step = Callable[[Ctx, Job], Job | None]
_STEPS: dict[str, Step] = {}


def step(kind: str) -> Callable[[Step], Step]:
    def register(fn: Step) -> Step:
        if kind in _STEPS:
            raise ValueError(f"job kind {kind!r} already has a step")
        _STEPS[kind] = fn
        return fn

    return register


def start(ctx: Ctx, kind: str, ref: str, **data: str) -> None:
    """Add a job and run its first step now."""
    job = Job(kind=kind, ref=ref, data=data)
    ctx.subject.jobs.append(job)
    _run(ctx, job)


def cancel(ctx: Ctx, kind: str, ref: str | None = None) -> None:
    ctx.subject.jobs = [
        j for j in ctx.subject.jobs if not (j.kind == kind and (ref is None or j.ref == ref))
    ]


def running(ctx: Ctx, kind: str, ref: str) -> bool:
    return any(j.kind == kind and j.ref == ref for j in ctx.subject.jobs)


def run_pending(ctx: Ctx) -> None:
    """Run the subject's jobs while this step has budget; ask for another step if any remain."""
    for job in list(ctx.subject.jobs):
        if ctx.budget <= 0:
            break
        if job in ctx.subject.jobs:
            _run(ctx, job)
    if ctx.subject.jobs:
        ctx.more = True


def _run(ctx: Ctx, job: Job) -> None:
    result = _STEPS[job.kind](ctx, job)
    jobs = ctx.subject.jobs
    at = next((i for i, j in enumerate(jobs) if j.kind == job.kind and j.ref == job.ref), None)
    if at is None:
        return  # the step cancelled its own job
    if result is None:
        del jobs[at]
    else:
        jobs[at] = result
        ctx.more = True


def page(ctx: Ctx, job: Job, *, prefix: str = "") -> tuple[list[RecordState], bool]:
    """The next records after the job's cursor (within this step's budget), and
    whether they are the last."""
    limit = max(1, min(limits.PAGE, ctx.budget))
    got = ctx.records.scan(after=job.cursor, limit=limit + 1, prefix=prefix)
    last = len(got) <= limit
    got = got[:limit]
    ctx.budget -= len(got)
    return got, last


def advance(job: Job, records: list[RecordState], **data: str) -> Job:
    """The job after a page of ``records``, with ``data`` merged in."""
    cursor = records[-1].key if records else job.cursor
    return replace(job, cursor=cursor, page=job.page + 1, data={**job.data, **data})
