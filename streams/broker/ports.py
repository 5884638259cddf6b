"""Free loopback ports for broker and controller listeners.

The kernel picks them (bind to port 0). Between closing our probe socket and the
JVM binding the port another process may take it; the launcher detects that
("Address already in use" in the node's log) and retries with fresh ports.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

LOOPBACK = "127.0.0.1"
PORT_IN_USE_MARKERS = ("Address already in use", "BindException")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports that were free a moment ago.

    All probe sockets stay bound until every port is chosen, so the kernel cannot
    hand out the same port twice within one call.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def logs_show_port_conflict(log_files: Mapping[Path, int]) -> bool:
    """True if a node's logs say it could not bind its listener.

    ``log_files`` maps each log to the offset to read from, so lines left by an
    earlier run of the same node (before a restart) are not mistaken for new ones.
    """
    for log, offset in log_files.items():
        try:
            with log.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        if any(marker in text for marker in PORT_IN_USE_MARKERS):
            return True
    return False


def log_sizes(log_files: Iterable[Path]) -> dict[Path, int]:
    """Current size of each log (0 if absent): the offsets for ``logs_show_port_conflict``."""
    sizes = {}
    for log in log_files:
        try:
            sizes[log] = log.stat().st_size
        except OSError:
            sizes[log] = 0
    return sizes
