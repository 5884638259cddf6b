"""Clean stops: the worker's stop watchdog and the demo's signal handling, without processes."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from agents.runtime.stopping import (
    ALARM_MARGIN_S,
    EXIT_STOP_TIMED_OUT,
    StopWatchdog,
    bound_consumer_thread,
)
from agents.tools.demo import STOP_SIGNALS, _Interrupts, _stop_on_signals


class FakeTimer:
    def __init__(self, seconds: float, fire: Callable[[], None]) -> None:
        self.seconds, self.fire = seconds, fire
        self.daemon = False
        self.started = False

    def start(self) -> None:
        self.started = True


class Exits(Exception):
    """Stands for os._exit: the test goes on instead of the process ending."""


def watchdog(limit_s: float = 15.0) -> tuple[StopWatchdog, list[FakeTimer], list[int], list[int]]:
    timers: list[FakeTimer] = []
    exits: list[int] = []
    alarms: list[int] = []

    def timer(seconds: float, fire: Callable[[], None]) -> FakeTimer:
        timers.append(FakeTimer(seconds, fire))
        return timers[-1]

    def exit_now(code: int) -> None:
        exits.append(code)
        raise Exits

    dog = StopWatchdog(limit_s, exit_now=exit_now, timer=timer, alarm=alarms.append)
    return dog, timers, exits, alarms


def test_the_first_signal_arms_a_daemon_timer_and_a_later_kernel_alarm() -> None:
    dog, timers, exits, alarms = watchdog(15.0)
    dog.arm("SIGTERM")
    assert [(t.seconds, t.daemon, t.started) for t in timers] == [(15.0, True, True)]
    assert alarms == [15 + ALARM_MARGIN_S]
    assert exits == []


def test_still_alive_at_the_limit_exits_75_after_flushing(caplog: pytest.LogCaptureFixture) -> None:
    dog, timers, exits, _ = watchdog(15.0)
    flushed: list[bool] = []
    dog.before_exit = lambda: flushed.append(True)
    dog.arm("SIGTERM")
    with pytest.raises(Exits):
        timers[0].fire()
    assert exits == [EXIT_STOP_TIMED_OUT] == [75]
    assert flushed == [True]
    assert "still stopping 15.0 s after SIGTERM" in caplog.text


def test_a_second_signal_exits_at_once() -> None:
    dog, timers, exits, _ = watchdog()
    dog.arm("SIGTERM")
    with pytest.raises(Exits):
        dog.arm("SIGINT")
    assert exits == [75]
    assert len(timers) == 1


def test_the_consumer_thread_gets_a_third_of_the_limit() -> None:
    thread = SimpleNamespace(shutdown_timeout=60.0)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=thread))
    bound_consumer_thread(app, 15.0)  # type: ignore[arg-type]
    assert thread.shutdown_timeout == pytest.approx(5.0)
    bound_consumer_thread(SimpleNamespace(consumer=object()), 15.0)  # type: ignore[arg-type]


def test_the_first_stop_signal_interrupts_later_ones_do_not() -> None:
    interrupts = _Interrupts()
    with pytest.raises(KeyboardInterrupt):
        interrupts.handle(signal.SIGTERM, None)
    interrupts.handle(signal.SIGINT, None)  # the cleanup is under way: ignored
    assert interrupts.received == signal.SIGTERM


def test_an_interrupt_while_a_child_starts_waits_until_it_is_known() -> None:
    interrupts = _Interrupts()
    started: list[str] = []

    def start_worker() -> None:
        with interrupts.holding():
            interrupts.handle(signal.SIGHUP, None)
            started.append("worker")  # still runs: the child gets registered

    with pytest.raises(KeyboardInterrupt):
        start_worker()
    assert started == ["worker"]


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_sigterm_sighup_and_sigint_take_the_ctrl_c_path(signum: int) -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def signalled() -> None:
        with _stop_on_signals():
            signal.raise_signal(signum)  # the handler runs before this returns

    with pytest.raises(KeyboardInterrupt):
        signalled()
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_once_the_demo_stops_by_itself_signals_no_longer_interrupt() -> None:
    interrupts = _Interrupts()
    interrupts.stopping = True
    interrupts.handle(signal.SIGTERM, None)  # the cleanup goes on
    assert interrupts.received is None
