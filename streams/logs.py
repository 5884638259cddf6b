"""Log hygiene every process shares: librdkafka through Python logging, repeats limited.

librdkafka writes its own lines (``%3|1712345678.123|FAIL|rdkafka#consumer-1| ...``)
straight to stderr from its threads, past Python logging: onto the demo's screen,
and unfiltered into a worker's log at about twenty lines a second while a broker
is away. Given a Python logger (``kafka_log_config``, part of every client's
settings through ``KafkaSecurity.confluent_config``) a client queues its lines
instead, and hands them to that logger whenever it is polled. Consumers and
producers are polled by their owners; a client nobody polls (an admin client, a
consumer used only for offset lookups) is handed to ``serve_kafka_logs``, or its
queue would grow for as long as the broker is away.

``RepeatLimiter`` keeps a flood readable: while a broker is away, aiokafka and
librdkafka log the same failed connection on every retry. The first line of each
kind passes; repeats within a window are counted and summed up per logger in
one line per window.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

KAFKA_LOGGER_NAME = "librdkafka"
SUMMARY_LOGGER_NAME = "lifecycle.logs"
# Repeats of one kind of line within this many seconds are counted, not written.
DEFAULT_REPEAT_WINDOW_S = 60.0
# How often unpolled clients' queued lines are handed to Python logging.
LOG_PUMP_INTERVAL_S = 1.0
# Attribute that marks a summary line, so no limiter counts it as a repeat.
_SUMMARY_MARK = "lifecycle_repeat_summary"
_KEEP_MARK = "lifecycle_keep_every_line"
# ``extra=`` of a line about one item (a dead letter: where it is, why): such a
# line is that item's record, never a repeat, so no limiter holds it back.
KEEP_EVERY_LINE: Mapping[str, object] = MappingProxyType({_KEEP_MARK: True})
# Kinds of line remembered at once; the oldest is forgotten first.
_MAX_KINDS = 1024
_KIND_CHARS = 200
_DIGITS = re.compile(r"\d+")


def kafka_log_config() -> dict[str, Any]:
    """librdkafka settings that send a client's log lines to Python logging."""
    return {"logger": logging.getLogger(KAFKA_LOGGER_NAME)}


class Pollable(Protocol):
    def poll(self, timeout: float) -> Any: ...


P = TypeVar("P", bound=Pollable)


class KafkaLogPump:
    """Polls clients nobody else polls, so their queued log lines are written.

    Only for clients whose ``poll`` serves nothing but log lines (and the like):
    an admin client, a consumer never subscribed nor assigned. A producer's
    ``poll`` would run delivery callbacks on this thread, where their owners do
    not expect them, so producers are left to their owners' ``flush``/``poll``.
    """

    def __init__(self, interval_s: float = LOG_PUMP_INTERVAL_S, *, autostart: bool = True) -> None:
        self.interval_s = interval_s
        self.autostart = autostart
        self._clients: list[Callable[[], Pollable | None]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, client: Pollable) -> None:
        try:
            ref: Callable[[], Pollable | None] = weakref.ref(client)
        except TypeError:
            # confluent-kafka's C consumer cannot be weakly referenced: it is kept
            # until it fails to poll (closed). Hand over long-lived clients only.
            ref = _Strong(client)
        with self._lock:
            self._clients.append(ref)
            if self._thread is None and self.autostart:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="kafka-log-pump"
                )
                self._thread.start()

    def serve_once(self) -> None:
        """Hand every live client's queued lines to Python logging; forget the dead."""
        with self._lock:
            refs = list(self._clients)
        gone: list[Callable[[], Pollable | None]] = []
        for ref in refs:
            client = ref()
            if client is None:
                gone.append(ref)
                continue
            try:
                client.poll(0)
            except Exception:  # closed (RuntimeError) or broken: nothing more to serve
                gone.append(ref)
        if gone:
            with self._lock:
                self._clients = [r for r in self._clients if r not in gone]

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.serve_once()


class _Strong:
    def __init__(self, client: Pollable) -> None:
        self.client = client

    def __call__(self) -> Pollable:
        return self.client


_pump = KafkaLogPump()


def serve_kafka_logs(client: P) -> P:
    """Have ``client``'s queued log lines written about once a second; returns it."""
    _pump.add(client)
    return client


class RepeatLimiter(logging.Filter):
    """Lets the first line of a kind through and counts its repeats within a window.

    A kind is the logger, the level and the message with its numbers blanked:
    node ids, ports, errno values and timings are what differ between retries,
    and librdkafka forwards every line through one ``"%s [%s] %s"`` template,
    so the template alone would merge all of its lines. Once a window has passed
    since the first suppressed line, one summary per logger is handed to
    ``emit``: "suppressed N similar messages from <logger> in the last Ns". It
    names the logger and a count only, never a suppressed message's text.

    Lines below ``min_level`` always pass: progress lines are not floods; so do
    lines logged with ``extra=KEEP_EVERY_LINE``.
    """

    def __init__(
        self,
        window_s: float,
        emit: Callable[[logging.LogRecord], object],
        *,
        clock: Callable[[], float] = time.monotonic,
        min_level: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.emit = emit
        self.clock = clock
        self.min_level = min_level
        self._lock = threading.Lock()
        self._passed: OrderedDict[tuple[str, int, str], float] = OrderedDict()
        self._suppressed: dict[str, tuple[int, int]] = {}  # logger -> (count, max level)
        self._since = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY_MARK, False) or getattr(record, _KEEP_MARK, False):
            return True
        with self._lock:
            now = self.clock()
            summaries = self._due_summaries(now)
            keep = record.levelno < self.min_level or self._first_of_kind(record, now)
        # Outside the lock: emitting runs this filter again (for the summary).
        for summary in summaries:
            self.emit(summary)
        return keep

    def flush(self) -> None:
        """Write the pending summaries now (before the process ends)."""
        with self._lock:
            summaries = self._summaries(self.clock())
        for summary in summaries:
            self.emit(summary)

    def _first_of_kind(self, record: logging.LogRecord, now: float) -> bool:
        kind = (record.name, record.levelno, _kind(record))
        passed_at = self._passed.get(kind)
        if passed_at is not None and now - passed_at < self.window_s:
            if not self._suppressed:
                self._since = now
            count, level = self._suppressed.get(record.name, (0, 0))
            self._suppressed[record.name] = (count + 1, max(level, record.levelno))
            return False
        self._passed[kind] = now
        self._passed.move_to_end(kind)
        while len(self._passed) > _MAX_KINDS:
            self._passed.popitem(last=False)
        return True

    def _due_summaries(self, now: float) -> list[logging.LogRecord]:
        if not self._suppressed or now - self._since < self.window_s:
            return []
        return self._summaries(now)

    def _summaries(self, now: float) -> list[logging.LogRecord]:
        seconds = max(0.0, now - self._since)
        records = [
            _summary(name, count, level, seconds)
            for name, (count, level) in sorted(self._suppressed.items())
        ]
        self._suppressed.clear()
        return records


def _kind(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a bad format: the template is a kind of its own
        message = str(record.msg)
    return _DIGITS.sub("#", message[:_KIND_CHARS])


def _summary(name: str, count: int, level: int, seconds: float) -> logging.LogRecord:
    record = logging.getLogger(SUMMARY_LOGGER_NAME).makeRecord(
        SUMMARY_LOGGER_NAME,
        level,
        __file__,
        0,
        "suppressed %d similar messages from %s in the last %.0fs",
        (count, name, seconds),
        None,
    )
    setattr(record, _SUMMARY_MARK, True)
    return record


def limit_repeats(
    handlers: Iterable[logging.Handler],
    window_s: float = DEFAULT_REPEAT_WINDOW_S,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> list[RepeatLimiter]:
    """Put a ``RepeatLimiter`` on each handler (one each, so none counts a line
    twice); a handler that has one keeps it. ``window_s`` 0 turns limiting off."""
    limiters: list[RepeatLimiter] = []
    if window_s <= 0:
        return limiters
    for handler in handlers:
        existing = [f for f in handler.filters if isinstance(f, RepeatLimiter)]
        if existing:
            limiters.extend(existing)
            continue
        limiter = RepeatLimiter(window_s, handler.handle, clock=clock)
        handler.addFilter(limiter)
        limiters.append(limiter)
    return limiters
