"""A bounded stop: SIGTERM/SIGINT ends the worker within a time limit, broker or not.

Faust's stop is graceful only while the broker answers. With the broker gone,
the consumer thread's shutdown failed on a fetch cancelled mid-retry (aiokafka)
and mode then waited its full ``shutdown_timeout`` (60 s) for a flag the thread
never set, while aiokafka kept reconnecting. Two bounds, the first from Faust's
own machinery, the second a last resort:

* the consumer thread's ``shutdown_timeout`` is cut to a third of the limit,
  so the rest of the stop (producer, loop) still runs within it;
* a watchdog armed by the first SIGTERM/SIGINT: if the process is still alive
  at the limit, it logs one line and exits 75 (EX_TEMPFAIL, the worker's "restart
  me" code, as in ``agents.runtime.handler``). A second signal exits at once.
  A kernel alarm a few seconds later ends the process even if Python cannot run
  any more (a hang in a C destructor while the interpreter finalises).

Why exiting without finishing the stop is safe: an event's offset is committed
only after its outputs, audit entries and state writes are confirmed by the
broker (``agents.runtime.handler``), and Faust commits only offsets of events
whose batch completed. Whatever has not been committed when the process ends
is replayed by the next owner of the partition, and replays are harmless
(command ids are stable). Exiting here is no worse than a SIGKILL, which the
pipeline is built to survive (the chaos suite kills workers under traffic); a
transaction the audit writer left open is aborted by the broker or fenced by
the next owner.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

import faust

from agents.runtime.handler import EXIT_DELIVERY_FAILED
from streams.logs import RepeatLimiter, limit_repeats

log = logging.getLogger(__name__)

EXIT_STOP_TIMED_OUT = EXIT_DELIVERY_FAILED
# The kernel alarm fires this long after the watchdog should have.
ALARM_MARGIN_S = 5
# Share of the stop limit the consumer thread may take to leave the group: a
# healthy one needs well under a second; the rest is for the producer and loop.
CONSUMER_THREAD_SHARE = 1 / 3


class Timer(Protocol):
    daemon: bool

    def start(self) -> None: ...


class StopWatchdog:
    """Armed by the first stop signal; ends the process at ``limit_s`` if still alive."""

    def __init__(
        self,
        limit_s: float,
        *,
        exit_now: Callable[[int], object] = os._exit,
        timer: Callable[[float, Callable[[], None]], Timer] = threading.Timer,
        alarm: Callable[[int], object] | None = None,
        before_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self.limit_s = limit_s
        self.exit_now = exit_now
        self.timer = timer
        self.alarm = alarm if alarm is not None else _kernel_alarm
        self.before_exit = before_exit
        self.armed_by: str | None = None
        self._timer: Timer | None = None

    def arm(self, reason: str) -> None:
        """The first call starts the clock; a second one (the operator insists) exits."""
        if self.armed_by is not None:
            log.warning("%s while stopping: exiting now (%d)", reason, EXIT_STOP_TIMED_OUT)
            self._exit()
            return
        self.armed_by = reason
        self._timer = self.timer(self.limit_s, self.expire)
        self._timer.daemon = True  # never keeps a process alive that stopped in time
        self._timer.start()
        self.alarm(math.ceil(self.limit_s) + ALARM_MARGIN_S)

    def expire(self) -> None:
        log.error(
            "still stopping %.1f s after %s: exiting now (%d); events not committed "
            "are replayed by the partitions' next owner",
            self.limit_s,
            self.armed_by,
            EXIT_STOP_TIMED_OUT,
        )
        self._exit()

    def _exit(self) -> None:
        # Like agents.runtime.handler.exit_for_replay: no shutdown hooks, so no
        # offset is committed on the way out.
        self.before_exit()
        for handler in logging.getLogger().handlers:
            handler.flush()  # os._exit does not: the last lines would be lost
        self.exit_now(EXIT_STOP_TIMED_OUT)


def _kernel_alarm(seconds: int) -> None:
    # SIGALRM's default action ends the process whatever Python is doing. Only
    # where nothing else uses SIGALRM (mode's blocking detector would).
    if signal.getsignal(signal.SIGALRM) is signal.SIG_DFL:
        signal.alarm(seconds)


class Worker(faust.Worker):
    """Faust's worker with a bounded stop and repeat-limited logs.

    Named like Faust's: mode labels log lines with the class name, and
    ``[^Worker]: Ready`` is what tests, the chaos harness and benchmarks wait for.
    """

    def __init__(
        self,
        app: faust.App,
        *,
        watchdog: StopWatchdog,
        repeat_window_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.watchdog = watchdog
        self.repeat_window_s = repeat_window_s
        self.limiters: list[RepeatLimiter] = []

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # mode replaces the root handlers as the worker starts: limit these.
        super().on_setup_root_logger(logger, level)
        self.limiters = limit_repeats(logger.handlers, self.repeat_window_s)

    # mode installs these two as the event loop's SIGINT/SIGTERM handlers.
    def _on_sigint(self) -> None:
        self.watchdog.arm("SIGINT")
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self.watchdog.arm("SIGTERM")
        super()._on_sigterm()

    def flush_summaries(self) -> None:
        for limiter in self.limiters:
            limiter.flush()


def bound_consumer_thread(app: faust.App, limit_s: float) -> None:
    """Cut the wait for Faust's consumer thread to stop to a share of ``limit_s``."""
    # mode's ServiceThread.shutdown_timeout (60 s by default) is the wait that
    # hung; the thread object is the driver's (faust ThreadDelegateConsumer._thread).
    thread = getattr(app.consumer, "_thread", None)
    if thread is not None:
        thread.shutdown_timeout = min(thread.shutdown_timeout, limit_s * CONSUMER_THREAD_SHARE)
