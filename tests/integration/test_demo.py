"""The README's run command works: the demo shows recordings expire and requests complete."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

from tests.integration.pipeline import LIFECYCLE, wait_for


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _watch(process: subprocess.Popen[str]) -> str:
    """Check the demo's desk while the demo runs; the demo's whole output."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # up to the desk's line; the rest is read below
        lines.append(line)
        if line.startswith("privacy desk:"):
            break
    desk = re.search(
        r"privacy desk: (http://127\.0\.0\.1:\d+/) .*demo login: demo / (\S+);",
        lines[-1] if lines else "",
    )
    assert desk, "no desk line in the demo's output:\n" + "".join(lines)[-3000:]
    # The desk serves while the demo runs, and asks for a sign-in.
    wait_for(lambda: _answers(desk.group(1) + "healthz"), 40, "the demo's desk never answered")
    with urllib.request.urlopen(desk.group(1) + "requests", timeout=10) as page:
        assert "/login" in page.url
    rest, _ = process.communicate(timeout=240)
    return "".join(lines) + rest


def test_demo_shows_the_lifecycle_within_a_minute(kafka_bootstrap: str, tmp_path: Path) -> None:
    with (tmp_path / "demo-stderr.txt").open("w") as stderr:
        # A file, not a pipe: nothing reads stderr while the demo runs.
        process = subprocess.Popen(
            [str(LIFECYCLE), "demo", "--duration", "50"],
            env={
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "LIFECYCLE_VAR_DIR": str(tmp_path),
            },
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    with process:  # stops it and closes its pipe whatever happens below
        try:
            out = _watch(process)
        finally:
            if process.poll() is None:
                # Ctrl-C: the demo stops its worker, desk and consumers itself.
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
    err = (tmp_path / "demo-stderr.txt").read_text(errors="replace")
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    # A live summary with traffic flowing and commands acknowledged.
    summaries = re.findall(r"events in (\d+) \| commands out (\d+) \| acknowledged (\d+)", out)
    assert summaries
    events, emitted, acked = map(int, summaries[-1])
    assert events > 0
    assert emitted > 0
    assert acked > 0
    # Recordings expire under the compressed N7 rule, and downstream confirms.
    assert re.search(r"N7\.call-recordings\s+deletion commanded", out)
    assert "downstream confirmed" in out
