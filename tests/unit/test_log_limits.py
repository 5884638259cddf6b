"""Log hygiene: repeats limited with a summary, librdkafka routed, unpolled clients served."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from streams.logs import (
    KAFKA_LOGGER_NAME,
    KEEP_EVERY_LINE,
    KafkaLogPump,
    RepeatLimiter,
    kafka_log_config,
    limit_repeats,
)
from streams.settings import KafkaSecurity


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collecting(logging.Handler):
    """A handler that keeps what it would write."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name} {record.getMessage()}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def handler(clock: Clock) -> Collecting:
    handler = Collecting()
    limit_repeats([handler], 60.0, clock=clock)
    return handler


def record(name: str, msg: str, *args: Any, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def refused(node: int = 1) -> logging.LogRecord:
    return record("aiokafka", "Unable connect to node with id %s: %s", node, "[Errno 111] refused")


def test_the_first_of_a_kind_passes_and_repeats_within_the_window_do_not(
    handler: Collecting, clock: Clock
) -> None:
    for _ in range(100):
        handler.handle(refused())
        clock.now += 0.1
    assert handler.lines == ["ERROR aiokafka Unable connect to node with id 1: [Errno 111] refused"]


def test_a_summary_per_logger_once_a_window_has_passed(handler: Collecting, clock: Clock) -> None:
    handler.handle(refused())
    for _ in range(5):
        clock.now += 1
        handler.handle(refused())
    handler.handle(record("librdkafka", "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "refused"))
    handler.handle(record("librdkafka", "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "refused"))
    clock.now += 60
    handler.handle(record("faust", "something new"))
    assert handler.lines[-3:] == [
        # Counted from the first line suppressed (1 s after the first passed).
        "ERROR lifecycle.logs suppressed 5 similar messages from aiokafka in the last 64s",
        "ERROR lifecycle.logs suppressed 1 similar messages from librdkafka in the last 64s",
        "ERROR faust something new",
    ]


def test_after_the_window_a_kind_passes_again(handler: Collecting, clock: Clock) -> None:
    handler.handle(refused())
    clock.now += 61
    handler.handle(refused())
    assert handler.lines == [
        "ERROR aiokafka Unable connect to node with id 1: [Errno 111] refused",
        "ERROR aiokafka Unable connect to node with id 1: [Errno 111] refused",
    ]


def test_numbers_do_not_make_a_new_kind_but_other_words_do(handler: Collecting) -> None:
    handler.handle(refused(1))
    handler.handle(refused(2))  # a retry against another node id: a repeat
    handler.handle(record("aiokafka", "Unable to update metadata from [%s]", 1))
    handler.handle(record("librdkafka", "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "refused"))
    handler.handle(record("librdkafka", "%s [%s] %s", "REQTMOUT", "rdkafka#consumer-1", "timed"))
    assert len(handler.lines) == 4


def test_a_summary_names_the_logger_and_a_count_never_a_message(
    handler: Collecting, clock: Clock
) -> None:
    handler.handle(record("desk", "subject %s not found", "alice@example.com"))
    handler.handle(record("desk", "subject %s not found", "alice@example.com"))
    clock.now += 60
    limiter = next(f for f in handler.filters if isinstance(f, RepeatLimiter))
    limiter.flush()
    assert handler.lines[-1] == (
        "ERROR lifecycle.logs suppressed 1 similar messages from desk in the last 60s"
    )


def test_progress_lines_below_warning_always_pass(handler: Collecting) -> None:
    for _ in range(3):
        handler.handle(record("faust", "Stopping...", level=logging.INFO))
    assert len(handler.lines) == 3


def test_flush_writes_the_pending_summary_and_nothing_when_none_is(
    handler: Collecting, clock: Clock
) -> None:
    limiter = next(f for f in handler.filters if isinstance(f, RepeatLimiter))
    limiter.flush()
    assert handler.lines == []
    handler.handle(refused())
    handler.handle(refused())
    clock.now += 2
    limiter.flush()
    assert handler.lines[-1] == (
        "ERROR lifecycle.logs suppressed 1 similar messages from aiokafka in the last 2s"
    )
    limiter.flush()
    assert len(handler.lines) == 2


def test_limiting_is_installed_once_per_handler_and_can_be_turned_off(clock: Clock) -> None:
    handler = Collecting()
    first = limit_repeats([handler], 60.0, clock=clock)
    again = limit_repeats([handler], 60.0, clock=clock)
    assert first == again
    assert len(handler.filters) == 1
    off = Collecting()
    assert limit_repeats([off], 0) == []
    assert off.filters == []


def test_every_client_config_sends_librdkafka_lines_to_python_logging() -> None:
    config = KafkaSecurity().confluent_config()
    assert config["logger"] is logging.getLogger(KAFKA_LOGGER_NAME)
    assert kafka_log_config() == {"logger": logging.getLogger(KAFKA_LOGGER_NAME)}


class Client:
    def __init__(self, *, closed: bool = False) -> None:
        self.polls: list[float] = []
        self.closed = closed

    def poll(self, timeout: float) -> None:
        if self.closed:
            raise RuntimeError("Consumer closed")
        self.polls.append(timeout)


def test_the_pump_polls_live_clients_and_forgets_collected_and_closed_ones() -> None:
    pump = KafkaLogPump(autostart=False)
    alive, closed, collected = Client(), Client(closed=True), Client()
    pump.add(alive)
    pump.add(closed)
    pump.add(collected)
    del collected
    pump.serve_once()
    assert alive.polls == [0]
    assert len(pump) == 1


def test_a_line_about_one_item_is_never_held_back(handler: Collecting) -> None:
    logger = logging.getLogger("test.deadletters")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for offset in range(3):
            logger.warning("dead-letter offset=%d", offset, extra=KEEP_EVERY_LINE)
    finally:
        logger.removeHandler(handler)
    assert len(handler.lines) == 3
