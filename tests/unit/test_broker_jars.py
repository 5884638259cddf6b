"""The jar cache: where it lives, when it is reused, when it is fetched again."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import pytest

from streams.broker import jars, paths


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LIFECYCLE_KAFKA_CACHE", str(root))
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    return root


class FakeMvn:
    """Stands in for mvn: writes the jars copy-dependencies would, counts its runs."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, command: list[str], out: TextIO) -> int:
        self.runs += 1
        version = next(a for a in command if a.startswith("-Dkafka.version=")).split("=", 1)[1]
        libs = Path(next(a for a in command if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
        libs.mkdir(parents=True)
        (libs / f"kafka_2.13-{version}.jar").write_bytes(b"jar")
        (libs / "slf4j-api-2.0.17.jar").write_bytes(b"jar")
        return 0


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIFECYCLE_KAFKA_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_root() == tmp_path / "home" / ".cache" / "data-lifecycle"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_root() == tmp_path / "xdg" / "data-lifecycle"
    monkeypatch.setenv("LIFECYCLE_KAFKA_CACHE", str(tmp_path / "override"))
    assert paths.cache_root() == tmp_path / "override"


def test_default_version_comes_from_the_pom() -> None:
    assert jars.default_kafka_version() == "4.1.2"
    assert "<kafka.version>4.1.2</kafka.version>" in paths.POM_FILE.read_text()


def test_first_call_fetches_later_calls_reuse(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mvn = FakeMvn()
    monkeypatch.setattr(jars, "run_mvn", mvn)
    libs = jars.ensure_jars("4.1.2")
    assert libs == cache / "kafka-4.1.2" / "libs"
    assert (libs / "kafka_2.13-4.1.2.jar").is_file()
    assert (cache / "kafka-4.1.2" / "libs.complete").is_file()
    assert jars.ensure_jars("4.1.2") == libs
    assert mvn.runs == 1


def test_half_copied_cache_is_fetched_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = cache / "kafka-4.1.2" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-4.1.2.jar").write_bytes(b"trunc")  # no completion marker
    mvn = FakeMvn()
    monkeypatch.setattr(jars, "run_mvn", mvn)
    assert jars.ensure_jars("4.1.2") == libs
    assert mvn.runs == 1
    assert (libs / "slf4j-api-2.0.17.jar").is_file()


def test_cache_built_from_another_pom_is_fetched_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mvn = FakeMvn()
    monkeypatch.setattr(jars, "run_mvn", mvn)
    jars.ensure_jars("4.1.2")
    (cache / "kafka-4.1.2" / "libs.complete").write_text("kafka=4.1.2 pom-sha256=old\n")
    jars.ensure_jars("4.1.2")
    assert mvn.runs == 2


def test_each_version_has_its_own_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jars, "run_mvn", FakeMvn())
    assert jars.ensure_jars("4.1.1") != jars.ensure_jars("4.1.2")
    assert sorted(p.name for p in cache.iterdir()) == ["kafka-4.1.1", "kafka-4.1.2"]
