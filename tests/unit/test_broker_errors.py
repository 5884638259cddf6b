"""One-line, actionable failure messages (no JVM or mvn is started here)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import pytest
from click.testing import CliRunner

from streams.broker import jars, tools
from streams.broker.cli import kafka
from streams.broker.errors import BrokerError
from streams.broker.launcher import LocalKafka


@pytest.fixture
def no_programs_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIFECYCLE_KAFKA_CACHE", str(cache))
    return cache


@pytest.mark.usefixtures("no_programs_on_path")
def test_missing_java_names_the_package_and_java_home() -> None:
    with pytest.raises(BrokerError) as err:
        tools.find_java()
    assert str(err.value) == (
        "java not found: install a JDK 17+ (e.g. apt-get install openjdk-17-jre-headless) "
        "or set JAVA_HOME"
    )


def test_java_home_without_java_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(BrokerError, match=r"JAVA_HOME=.* has no executable bin/java"):
        tools.find_java()


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_java_major_version_is_parsed(output: str, major: int | None) -> None:
    assert tools.parse_java_major(output) == major


@pytest.mark.usefixtures("no_programs_on_path", "empty_cache")
def test_missing_mvn_is_reported_when_jars_are_not_cached() -> None:
    with pytest.raises(BrokerError) as err:
        jars.ensure_jars("4.1.2")
    assert str(err.value).startswith("mvn not found: install Maven (e.g. apt-get install maven)")


def fake_mvn(output: str, returncode: int) -> object:
    def run(command: list[str], out: TextIO) -> int:
        out.write(output)
        return returncode

    return run


@pytest.mark.usefixtures("empty_cache")
def test_mvn_without_network_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(
        jars,
        "run_mvn",
        fake_mvn(
            "[ERROR] Failed to execute goal ... Could not transfer artifact "
            "org.apache.kafka:kafka_2.13:pom:4.1.2 from/to central "
            "(https://repo.maven.apache.org/maven2): repo.maven.apache.org: Temporary failure "
            "in name resolution\n",
            1,
        ),
    )
    with pytest.raises(BrokerError) as err:
        jars.ensure_jars("4.1.2")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("could not fetch Kafka 4.1.2 jars with mvn (exit 1, see ")
    assert "mvn.log" in message
    assert "https://repo1.maven.org" in message
    assert "LIFECYCLE_KAFKA_CACHE" in message


@pytest.mark.usefixtures("empty_cache")
def test_unknown_kafka_version_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(
        jars,
        "run_mvn",
        fake_mvn("[ERROR] Could not find artifact org.apache.kafka:kafka_2.13:jar:9.9.9 in", 1),
    )
    with pytest.raises(BrokerError, match=r"^Kafka 9\.9\.9 is not on Maven Central"):
        jars.ensure_jars("9.9.9")


@pytest.mark.usefixtures("no_programs_on_path")
def test_cli_prints_one_line_and_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path))
    result = CliRunner().invoke(kafka, ["up", "--name", "no-java"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: {tools.JAVA_MISSING}\n"
    assert not isinstance(result.exception, BrokerError)  # handled, not a traceback


def test_unstarted_cluster_has_no_bootstrap_servers() -> None:
    with pytest.raises(BrokerError, match="is not started"):
        _ = LocalKafka(name="never-started").bootstrap_servers


@pytest.mark.parametrize("nodes", [0, 2, 5])
def test_only_one_or_three_nodes(nodes: int) -> None:
    with pytest.raises(ValueError, match="nodes must be one of"):
        LocalKafka(nodes=nodes)


def test_cluster_names_are_safe_dir_names() -> None:
    with pytest.raises(ValueError, match="cluster name"):
        LocalKafka(name="../escape")


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_cli_refuses_names_that_leave_the_var_dir(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path / "var"))
    victim = tmp_path / "victim"
    (victim / "node-1" / "data").mkdir(parents=True)
    result = CliRunner().invoke(kafka, [command, "--name", "../../victim"])
    assert result.exit_code == 2
    assert "Invalid value for '--name'" in result.stderr
    assert (victim / "node-1" / "data").is_dir()
