"""Broker JVM processes: start in their own session, stop with SIGTERM then SIGKILL.

Processes this Python process owns are kept in a registry that an ``atexit`` hook
and SIGTERM/SIGHUP handlers empty, so a test run that ends (or is told to end)
does not leave JVMs behind. A detached cluster (``lifecycle kafka up``) is taken
out of the registry once it is up and is stopped later through its pid files.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType

PID_FILE_NAME = "kafka.pid"
DEFAULT_STOP_TIMEOUT_S = 20.0


class NodeProcess:
    """One running JVM, identified by its pid and a marker in its command line.

    The marker (the node's server.properties path) guards against signalling an
    unrelated process that reused the pid of a broker that died long ago.
    """

    def __init__(self, pid: int, marker: str, popen: subprocess.Popen[bytes] | None = None):
        self.pid = pid
        self.marker = marker
        self._popen = popen

    @classmethod
    def spawn(
        cls, command: Sequence[str], *, cwd: Path, log_file: Path, marker: str
    ) -> NodeProcess:
        # start_new_session: a Ctrl-C in the terminal reaches pytest/the CLI, which
        # then stops the JVMs in order, instead of hitting the JVMs mid-test.
        with log_file.open("ab") as out:
            popen = subprocess.Popen(
                list(command),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(popen.pid, marker, popen)

    def exit_code(self) -> int | None:
        """The exit code if the process ended (only known for processes we started)."""
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_is_running(self.pid, self.marker)

    def signal(self, signum: int) -> None:
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; True if it did."""
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def kill(self) -> None:
        """SIGKILL and wait: the abrupt failure fault tests want."""
        self.signal(signal.SIGKILL)
        self.wait(30.0)


def stop_all(processes: Iterable[NodeProcess], timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
    """SIGTERM every process at once, wait up to ``timeout`` in total, SIGKILL the rest."""
    procs = [p for p in processes if p.is_running()]
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        if not proc.wait(max(0.0, deadline - time.monotonic())):
            proc.kill()


def pid_is_running(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive, not a zombie, and its command line contains ``marker``."""
    proc_dir = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # not Linux: best effort, no reuse check
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    try:
        stat = (proc_dir / "stat").read_text()
        cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself
    # contain spaces or parentheses.
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state != "Z" and marker in cmdline.split("\0")


def write_pid_file(node_dir: Path, pid: int) -> None:
    (node_dir / PID_FILE_NAME).write_text(f"{pid}\n", encoding="utf-8")


def read_pid_file(node_dir: Path) -> int | None:
    try:
        return int((node_dir / PID_FILE_NAME).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def remove_pid_file(node_dir: Path) -> None:
    (node_dir / PID_FILE_NAME).unlink(missing_ok=True)


# --- registry of processes to stop when this Python process ends ---------------

_registry: dict[int, NodeProcess] = {}
_registry_lock = threading.Lock()
_hooks_installed = False
_EXIT_STOP_TIMEOUT_S = 10.0


def register(proc: NodeProcess) -> None:
    _install_hooks()
    with _registry_lock:
        _registry[id(proc)] = proc


def unregister(proc: NodeProcess) -> None:
    with _registry_lock:
        _registry.pop(id(proc), None)


# Detached processes outlive us on purpose. Their Popen objects are kept here so
# they are never garbage-collected while the JVM runs: Popen.__del__ would emit
# "subprocess N is still running" (a ResourceWarning, an error under pytest).
_detached: list[NodeProcess] = []


def detach(proc: NodeProcess) -> None:
    """Stop owning ``proc``: it is no longer stopped when this process exits."""
    unregister(proc)
    with _registry_lock:
        _detached.append(proc)


def registered() -> list[NodeProcess]:
    with _registry_lock:
        return list(_registry.values())


# Run after the processes are stopped at exit, e.g. to remove a cluster's data dir.
_exit_cleanups: dict[int, Callable[[], None]] = {}


def add_exit_cleanup(key: int, cleanup: Callable[[], None]) -> None:
    _install_hooks()
    with _registry_lock:
        _exit_cleanups[key] = cleanup


def remove_exit_cleanup(key: int) -> None:
    with _registry_lock:
        _exit_cleanups.pop(key, None)


def stop_registered() -> None:
    """Stop every process still registered (at exit or on a termination signal)."""
    with _registry_lock:
        procs = list(_registry.values())
        _registry.clear()
        cleanups = list(_exit_cleanups.values())
        _exit_cleanups.clear()
    stop_all(procs, timeout=_EXIT_STOP_TIMEOUT_S)
    for cleanup in cleanups:
        # Best effort while the interpreter exits: one failed cleanup must not
        # keep the others (or the exit itself) from happening.
        with contextlib.suppress(Exception):
            cleanup()


def _install_hooks() -> None:
    global _hooks_installed
    with _registry_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(stop_registered)
    # Python's default SIGTERM/SIGHUP action ends the process without running atexit
    # hooks, which would orphan the JVMs. Handlers can only be set from the main thread.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            _chain_handler(signum)


def _chain_handler(signum: int) -> None:
    previous = signal.getsignal(signum)

    def handler(received: int, frame: FrameType | None) -> None:
        stop_registered()
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL (or unknown): die the way the signal would have made us die
            signal.signal(received, signal.SIG_DFL)
            os.kill(os.getpid(), received)

    chained: Callable[[int, FrameType | None], None] = handler
    signal.signal(signum, chained)
