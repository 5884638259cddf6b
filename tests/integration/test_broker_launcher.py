"""The launcher's own promises, with real JVMs: detached CLI clusters, clean failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import launcher
from streams.broker.errors import BrokerError
from streams.broker.launcher import LocalKafka
from streams.broker.ports import free_ports


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path))
    return tmp_path


def jvms_running_from(directory: Path) -> list[int]:
    """Pids of processes whose command line mentions ``directory`` (our JVMs)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(directory) in text:
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (this one) is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `kafka` command group in a separate process, as a shell would run it."""
    code = "from streams.broker.cli import kafka; kafka()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ,
    )


def test_cli_up_status_down(var_dir: Path) -> None:
    cluster_dir = var_dir / "kafka" / "cli-test"
    up = run_cli("up", "--name", "cli-test")
    try:
        assert up.returncode == 0, up.stderr
        # Only the env line on stdout, so `eval "$(lifecycle kafka up)"` works.
        assert up.stdout.startswith("KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")
        assert up.stdout.count("\n") == 1
        # The CLI process has exited; its broker must still be running.
        assert jvms_running_from(cluster_dir)

        status = run_cli("status", "--name", "cli-test")
        assert status.returncode == 0, status.stderr
        assert "serving=yes" in status.stdout
    finally:
        down = run_cli("down", "--name", "cli-test")
    assert down.returncode == 0, down.stderr
    assert jvms_running_from(cluster_dir) == []

    after = run_cli("status", "--name", "cli-test")
    assert after.returncode == 1
    assert after.stderr.count("\n") == 1  # one line, no traceback
    assert "is not running" in after.stderr


def test_start_timeout_kills_jvms_and_removes_data(var_dir: Path) -> None:
    # A node cannot serve within 0.1 s; this exercises the timeout path for real.
    cluster = LocalKafka(nodes=1, name="too-slow", base_dir=var_dir, wait_timeout=0.1)
    with pytest.raises(BrokerError, match=r"not up within 0\.1s .*see .*server\.log") as err:
        cluster.start()
    assert "\n" not in str(err.value)
    cluster_dir = var_dir / "too-slow"
    assert jvms_running_from(cluster_dir) == []
    assert not (cluster_dir / "node-1" / "data").exists()
    assert not (cluster_dir / "node-1" / "kafka.pid").exists()
    assert (cluster_dir / "node-1" / "logs").is_dir()  # kept: the message points there


def test_port_taken_before_the_jvm_binds_is_retried(
    var_dir: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def first_port_busy(count: int) -> list[int]:
        ports = free_ports(count)
        calls.append(count)
        return [busy_port, *ports[1:]] if len(calls) == 1 else ports

    monkeypatch.setattr(launcher, "free_ports", first_port_busy)
    with LocalKafka(nodes=1, name="port-race", base_dir=var_dir) as cluster:
        assert len(calls) == 2
        assert f":{busy_port}" not in cluster.bootstrap_servers
    assert jvms_running_from(var_dir / "port-race") == []
