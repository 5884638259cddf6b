"""The order in which a Kafka is chosen: env, then Docker (tests only), then local."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.broker.errors import BrokerError
from streams.connection import (
    BOOTSTRAP_ENV,
    TESTCONTAINERS_ENV,
    bootstrap_servers,
    choose_test_source,
    kafka_for_tests,
)


def docker_must_not_be_asked() -> bool:
    raise AssertionError("the env variable takes precedence; Docker must not be probed")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    monkeypatch.delenv(TESTCONTAINERS_ENV, raising=False)
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path))


def test_env_wins_over_docker_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "broker-a:9092,broker-b:9092")
    assert choose_test_source(docker_must_not_be_asked) == "env"


def test_docker_is_used_when_the_env_names_no_broker() -> None:
    assert choose_test_source(lambda: True) == "testcontainers"


def test_local_launcher_when_no_env_and_no_docker() -> None:
    assert choose_test_source(lambda: False) == "local"


def test_blank_env_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "  ")
    assert choose_test_source(lambda: False) == "local"


def test_docker_branch_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TESTCONTAINERS_ENV, "0")
    assert choose_test_source(lambda: True) == "local"


def test_tests_get_the_env_broker_without_starting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "127.0.0.1:19092")
    with kafka_for_tests(docker_answers=docker_must_not_be_asked) as endpoint:
        assert endpoint.bootstrap_servers == "127.0.0.1:19092"
        assert endpoint.source == "env"
        assert endpoint.cluster is None


def test_application_uses_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "kafka:9092")
    assert bootstrap_servers() == "kafka:9092"


def test_application_without_any_kafka_says_what_to_do() -> None:
    with pytest.raises(BrokerError) as err:
        bootstrap_servers("nothing-here")
    message = str(err.value)
    assert "\n" not in message
    assert f"set {BOOTSTRAP_ENV}" in message
    assert "lifecycle kafka up --name nothing-here" in message
