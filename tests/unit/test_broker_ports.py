"""Free-port allocation and port-conflict detection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streams.broker.ports import free_ports, log_sizes, logs_show_port_conflict, port_is_free


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    assert all(port_is_free(port) for port in ports)


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_zero_ports_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="count"):
        free_ports(0)


def test_bind_failure_in_logs_is_a_port_conflict(tmp_path: Path) -> None:
    quiet, bind = tmp_path / "server.log", tmp_path / "stdout.log"
    quiet.write_text("INFO starting\n")
    assert not logs_show_port_conflict({quiet: 0, tmp_path / "missing.log": 0})
    bind.write_text(
        "ERROR Exiting Kafka due to fatal exception\n"
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to "
        "127.0.0.1:9092: Address already in use.\n"
    )
    assert logs_show_port_conflict({quiet: 0, bind: 0})


def test_only_lines_written_since_the_mark_count(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("java.net.BindException: Address already in use\n")
    marks = log_sizes([log, tmp_path / "absent.log"])
    assert marks == {log: log.stat().st_size, tmp_path / "absent.log": 0}
    assert not logs_show_port_conflict(marks)
    with log.open("a") as out:
        out.write("java.net.BindException: Address already in use\n")
    assert logs_show_port_conflict(marks)
