"""Project files name paths relative to the repository, never one machine's absolute path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The workspace these files were written in, and wherever this clone lives.
FORBIDDEN = ("/work/", str(REPO) + "/")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [REPO / name for name in out.decode().split("\0") if name]
    this = Path(__file__).resolve()
    return [p for p in paths if p.is_file() and p.resolve() != this]


def test_no_tracked_file_names_a_machine_path() -> None:
    offenders = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO)}: {f}" for f in FORBIDDEN if f in text]
    assert offenders == []
