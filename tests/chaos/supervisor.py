"""A process supervisor, as a deployment has one: whatever exits is started again.

Each child runs in its own session (so a kill reaches the whole process group,
as a container's end would) and logs to its own file per start. The
supervisor counts every restart and remembers why the child went: killed by
the harness (a fault) or exited by itself (``exit <code>``), which is what a
crash loop looks like from outside. A child stopped on purpose (scaling down)
is not restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

POLL_S = 0.25
# A child that exits within this long of its start is crash-looping: back off.
CRASH_WINDOW_S = 20.0
MAX_BACKOFF_S = 8.0


KILLED = "killed"  # by the harness: a fault
STOPPED = "stopped"  # by the harness, on purpose: scaling down, the end of the run
CRASHED = "crashed"  # by itself
# Exited with EXIT_AFTER_STALL soon after the harness paused and resumed it: a
# fenced zombie stopping so that its batch is replayed by the new owner (the
# fault's intended consequence, not a crash).
STALLED = "stalled"
EXIT_AFTER_STALL = 75
STALL_AFTERMATH_S = 60.0


@dataclass(frozen=True)
class Exit:
    name: str
    at: float  # time.monotonic()
    code: int
    cause: str  # KILLED, STOPPED or CRASHED


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_dir: Path
    # A line the child logs once it serves; None: serving once started.
    ready_line: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    wanted: bool = True  # False once stopped on purpose
    # Why the harness ended the running process, if it did (KILLED or STOPPED).
    ending: str | None = None
    restarts: int = 0
    restart_at: float | None = None
    backoff_s: float = 0.0
    exits: list[Exit] = field(default_factory=list)
    # Until when an exit with EXIT_AFTER_STALL counts as the stall's consequence.
    stalled_until: float = 0.0
    _log_offset: int = 0
    _log_tail: str = ""

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Starts children, restarts those that exit, and says what happened."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, Child] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self.restart_log: list[tuple[float, str]] = []

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Supervisor:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop watching, then stop every child (SIGTERM, SIGKILL after ``timeout``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            children = [c for c in self.children.values() if c.running]
            for child in children:
                child.wanted = False
                child.ending = STOPPED
                _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.process.wait(10)

    # -- what the harness does -------------------------------------------------

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        ready_line: str | None = None,
    ) -> Child:
        with self._lock:
            child = self.children.get(name)
            if child is None:
                child = Child(name, argv, env, self.log_dir, ready_line)
                self.children[name] = child
            elif child.running:
                raise RuntimeError(f"{name} is already running")
            child.wanted = True
            child.backoff_s = 0.0
            self._spawn(child)
            return child

    def wait_ready(self, names: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self.children[n].ready_at is not None for n in names):
                    return
            time.sleep(POLL_S)
        waiting = [n for n in names if self.children[n].ready_at is None]
        raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(waiting)}")

    def kill(self, name: str) -> float:
        """SIGKILL the child's process group (a crash); the supervisor restarts it."""
        with self._lock:
            child = self.children[name]
            if not child.running:
                raise RuntimeError(f"{name} is not running")
            child.ending = KILLED
            _signal_group(child, signal.SIGKILL)
            return time.monotonic()

    def stall(self, name: str, seconds: float) -> float:
        """SIGSTOP the child's process group for ``seconds`` (past its session: it
        loses its partitions), then SIGCONT it. Returns when it was resumed."""
        with self._lock:
            child = self.children[name]
            if not child.running:
                raise RuntimeError(f"{name} is not running")
            _signal_group(child, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                child.stalled_until = time.monotonic() + STALL_AFTERMATH_S
                _signal_group(child, signal.SIGCONT)
        return time.monotonic()

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """Stop a child on purpose (SIGTERM; SIGKILL after ``timeout``); not restarted."""
        with self._lock:
            child = self.children[name]
            child.wanted = False
            child.restart_at = None
            child.ending = STOPPED
            process = child.process
        if process is None or process.poll() is not None:
            return 0 if process is None else process.returncode
        _signal_group(child, signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            return process.wait(10)

    def running(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(n for n, c in self.children.items() if c.running and n.startswith(prefix))

    def wanted(self, prefix: str = "") -> list[str]:
        """Children meant to run (running, or about to be restarted)."""
        with self._lock:
            return sorted(n for n, c in self.children.items() if c.wanted and n.startswith(prefix))

    # -- what the report reads -------------------------------------------------------

    @property
    def exits(self) -> list[Exit]:
        with self._lock:
            return sorted((e for c in self.children.values() for e in c.exits), key=lambda e: e.at)

    def last_restart(self) -> float | None:
        with self._lock:
            return max((at for at, _ in self.restart_log), default=None)

    # -- internals ---------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        child.starts += 1
        child.ending = None
        child.ready_at = None
        child.restart_at = None
        child._log_offset = 0
        child._log_tail = ""
        with child.log_path.open("wb") as log:
            child.process = subprocess.Popen(
                list(child.argv),
                env=dict(child.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child.started_at = time.monotonic()
        if child.ready_line is None:
            child.ready_at = child.started_at

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                for child in self.children.values():
                    self._check(child, now)
            self._stop.wait(POLL_S)

    def _check(self, child: Child, now: float) -> None:
        process = child.process
        if process is None:
            return
        if child.ready_at is None and child.ready_line is not None:
            self._scan_log(child, now)
        code = process.poll()
        if code is None:
            return
        if not child.exits or child.exits[-1].at < child.started_at:
            after_stall = code == EXIT_AFTER_STALL and now < child.stalled_until
            cause = child.ending or (STALLED if after_stall else CRASHED)
            child.exits.append(Exit(child.name, now, code, cause))
            if child.wanted:
                crash_loop = cause == CRASHED and now - child.started_at < CRASH_WINDOW_S
                child.backoff_s = (
                    min(MAX_BACKOFF_S, max(0.5, child.backoff_s * 2)) if crash_loop else 0.0
                )
                child.restart_at = now + child.backoff_s
        if child.wanted and child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self._spawn(child)
            self.restart_log.append((child.started_at, child.name))

    def _scan_log(self, child: Child, now: float) -> None:
        assert child.ready_line is not None
        try:
            with child.log_path.open("rb") as log:
                log.seek(child._log_offset)
                data = log.read()
        except OSError:
            return
        child._log_offset += len(data)
        text = child._log_tail + data.decode(errors="replace")
        if child.ready_line in text:
            child.ready_at = now
        # Keep enough to find a ready line split across two reads.
        child._log_tail = text[-len(child.ready_line) :]


def _signal_group(child: Child, sig: signal.Signals) -> None:
    if child.process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, sig)
