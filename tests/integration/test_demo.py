"""The README's run command works: the demo shows recordings expire and requests complete."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.integration.pipeline import LIFECYCLE


def test_demo_shows_the_lifecycle_within_a_minute(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(LIFECYCLE), "demo", "--duration", "50"],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "LIFECYCLE_VAR_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
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
