"""Run this tree's bench/worker_throughput.py and report the worker process's CPU.

    .venv/bin/python bench/worker_cpu.py

Wall-clock events/s swing with other load on a shared machine; the worker's
own CPU time per event (user + system, read from /proc for the ``lifecycle
worker`` child while it runs, start-up included) is disturbed much less, so
two versions can be compared on a busy machine. Run from the root of the tree
to measure (another version: ``cd <its tree> && PYTHONPATH=<its tree>
<this tree>/.venv/bin/python <this tree>/bench/worker_cpu.py``).
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EVENTS = 20_000  # worker_throughput.py's default
seen: dict[str, float] = {}


def _sample() -> None:
    me = os.getpid()
    while True:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != me or b"lifecycle" not in (proc / "cmdline").read_bytes():
                    continue
                seen[proc.name] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.3)


def main() -> int:
    threading.Thread(target=_sample, daemon=True).start()
    sys.argv = ["worker_throughput.py"]
    code = 0
    try:
        runpy.run_path("bench/worker_throughput.py", run_name="__main__")
    except SystemExit as exc:
        code = int(exc.code or 0)
    cpu = sum(seen.values())
    print(
        f"worker CPU (whole run, start-up included): {cpu:.1f} s, "
        f"{cpu / EVENTS * 1e6:,.0f} us/event"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
