"""Clean stops: a stop signal ends the demo and everything it started, and a worker
whose broker is gone; librdkafka's own lines never reach the demo's screen."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker.launcher import LocalKafka
from streams.connection import BOOTSTRAP_ENV
from tests.integration.pipeline import LIFECYCLE, Pipeline, pipelines, wait_for

# librdkafka's own stderr format: %<level>|<epoch seconds>|<facility>|...
RDKAFKA_LINE = re.compile(r"%\d\|\d+\.\d+\|")
# Generous: a bound on how long a broken run takes to fail, not a timing claim.
STARTUP_S = 120
# The demo's own bound: its worker's stop limit (15 s) plus its kill margin,
# the demo's clients, then its broker (if it started one).
DEMO_STOP_S = 60
WORKER_STOP_LIMIT_S = 15


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is parenthesised and may contain spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``, by pid, with its start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _stat(int(entry.name))
        if found is not None and found[1] != "Z":
            children.setdefault(found[0], []).append((int(entry.name), found[2]))
    result: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            result[pid] = started
            todo.append(pid)
    return result


def _still_running(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` still alive (the same process: same start time)."""
    alive = []
    for pid, started in processes.items():
        found = _stat(pid)
        if found is not None and found[1] != "Z" and found[2] == started:
            alive.append(pid)
    return alive


class Screen:
    """What the demo prints, read as it comes (its stdout is a pipe)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._stdout = process.stdout
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line)

    def events_in(self) -> int:
        counts = [
            int(m.group(1)) for m in map(re.compile(r"events in (\d+)").search, self.lines) if m
        ]
        return counts[-1] if counts else 0

    def close(self) -> None:
        self._reader.join(10)
        self._stdout.close()


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "LIFECYCLE_VAR_DIR": str(tmp_path)}
    env.pop(BOOTSTRAP_ENV, None)
    return env


def _run_demo_until_stopped(env: dict[str, str], tmp_path: Path, signum: int) -> str:
    """Start the demo, wait for traffic, send ``signum``: its whole screen output."""
    with (tmp_path / "demo-stderr.txt").open("w") as stderr:
        process = subprocess.Popen(
            [str(LIFECYCLE), "demo"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    screen = Screen(process)
    try:
        wait_for(lambda: screen.events_in() > 0, STARTUP_S, "the demo never saw traffic")
        started = _descendants(process.pid)
        # A worker, a desk (and a broker's JVM when the demo started one).
        assert len(started) >= 2, screen.lines
        process.send_signal(signum)
        returncode = process.wait(DEMO_STOP_S)
        wait_for(lambda: not _still_running(started), 10, "processes left behind")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        screen.close()
    out = "".join(screen.lines) + (tmp_path / "demo-stderr.txt").read_text(errors="replace")
    assert returncode == 0, out[-3000:]
    assert "demo stopped" in out
    assert not [line for line in out.splitlines() if RDKAFKA_LINE.search(line)], out[-3000:]
    return out


def test_sigterm_stops_the_demo_and_everything_it_started(
    kafka_bootstrap: str, demo_env: dict[str, str], tmp_path: Path
) -> None:
    _run_demo_until_stopped({**demo_env, BOOTSTRAP_ENV: kafka_bootstrap}, tmp_path, signal.SIGTERM)


def test_sighup_stops_the_demo_its_broker_last(demo_env: dict[str, str], tmp_path: Path) -> None:
    # The demo's own broker (its environment names none, whatever this session
    # uses): it is stopped last, while the demo's clients have gone, so nothing
    # reconnects to it on the screen. A fault test owns the broker it stops.
    _run_demo_until_stopped(demo_env, tmp_path, signal.SIGHUP)


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    # Started even when the session uses a given cluster: this test stops the
    # broker, and must never stop one it does not own (as the fault tests' 3-node
    # cluster, tests/integration/conftest.py).
    with LocalKafka(nodes=1, name=f"pytest-stop-{uuid.uuid4().hex[:8]}") as cluster:
        yield cluster


@pytest.fixture
def orphaned(own_broker: LocalKafka, tmp_path: Path) -> Iterator[Pipeline]:
    """A running worker whose broker has just been stopped."""
    for pipeline in pipelines(own_broker.bootstrap_servers, tmp_path, prefix="stop"):
        pipeline.start()
        own_broker.stop()
        yield pipeline


def test_sigterm_stops_a_worker_whose_broker_is_gone(orphaned: Pipeline) -> None:
    # Reconnecting for a while first: the stop used to wait 60 s for a
    # consumer thread whose shutdown had failed, and log every retry.
    time.sleep(3)
    started = time.monotonic()
    returncode = orphaned.stop(signal.SIGTERM, timeout=WORKER_STOP_LIMIT_S + 15)
    took = time.monotonic() - started
    log = orphaned.log_path.read_text(errors="replace")
    assert returncode in (0, 75), log[-3000:]
    assert took < WORKER_STOP_LIMIT_S + 10, f"stopped after {took:.1f} s"
    assert "suppressed" in log
