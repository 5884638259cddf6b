"""The chaos run's report: printed at the end, and as figures in docs/chaos.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.checks import MAX_EXAMPLES, Check
from tests.chaos.faults import FaultRecord

BEGIN = "<!-- chaos-figures:begin (written by `make chaos` with CHAOS_DOC=docs/chaos.md) -->"
END = "<!-- chaos-figures:end -->"


@dataclass
class RunReport:
    run_id: str
    settings: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    faults: list[FaultRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    restarts: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # the run itself failed (not a check)

    @property
    def violations(self) -> int:
        return sum(len(c.violations) for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and self.violations == 0

    # -- text for the terminal -----------------------------------------------------------

    def render(self) -> str:
        lines = [f"chaos run {self.run_id}", ""]
        lines += ["settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()), ""]
        lines += ["faults (time after traffic start, recovery = probes decided and acknowledged):"]
        for f in self.faults:
            lines.append(f"  +{f.at_s:5.0f}s  {f.detail:<62} {_recovery(f)}")
            lines += [f"          {note}" for note in f.notes]
        if not self.faults:
            lines.append("  none")
        lines += ["", "figures:"]
        lines += [f"  {k}: {v}" for k, v in {**self._timing_figures(), **self.figures}.items()]
        if self.restarts:
            lines.append(
                "  restarts by the supervisor: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.restarts.items()) if v)
            )
        lines += ["", "checks:"]
        for check in self.checks:
            mark = "PASS" if check.ok else "FAIL"
            count = f"{check.checked} checked" + (
                f", {len(check.violations)} violation(s)" if check.violations else ""
            )
            lines.append(f"  {mark}  {check.name}: {check.shows} ({count})")
            for v in check.violations[:MAX_EXAMPLES]:
                lines.append(f"          - {v}")
            if len(check.violations) > MAX_EXAMPLES:
                lines.append(f"          ... and {len(check.violations) - MAX_EXAMPLES} more")
            lines += [f"          {n}" for n in check.notes]
        lines.append("")
        if self.error:
            lines.append(f"RUN FAILED: {self.error}")
        else:
            failed = [c.name for c in self.checks if not c.ok]
            lines.append(
                "RESULT: all checks passed"
                if not failed
                else f"RESULT: {self.violations} violation(s) in {len(failed)} check(s): "
                + ", ".join(failed)
            )
        return "\n".join(lines)

    def _timing_figures(self) -> dict[str, str]:
        return {k: f"{v:.0f}s" for k, v in self.timings.items()}

    # -- markdown for docs/chaos.md ---------------------------------------------------------

    def markdown(self) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d")
        out = [
            BEGIN,
            "",
            f"Run `{self.run_id}` ({when}); settings: "
            + ", ".join(f"`{k}={v}`" for k, v in self.settings.items())
            + ".",
            "",
            "| fault | at | recovered after |",
            "| --- | --- | --- |",
        ]
        for f in self.faults:
            out.append(f"| {f.detail} | +{f.at_s:.0f} s | {_recovery(f)} |")
        out += ["", "| figure | value |", "| --- | --- |"]
        for k, v in {**self._timing_figures(), **self.figures}.items():
            out.append(f"| {k} | {v} |")
        if self.restarts:
            out.append(
                "| restarts by the supervisor | "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.restarts.items()) if v)
                + " |"
            )
        out += ["", "| check | result |", "| --- | --- |"]
        for c in self.checks:
            result = (
                f"pass ({c.checked} checked)"
                if c.ok
                else f"**FAIL**: {len(c.violations)} of {c.checked}"
            )
            out.append(f"| {c.name} | {result} |")
        out += ["", END]
        return "\n".join(out)

    def write(self, directory: Path) -> None:
        """report.txt and report.json next to the run's logs."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.txt").write_text(self.render() + "\n")
        (directory / "report.json").write_text(json.dumps(asdict(self), indent=2, default=str))


def update_doc(path: Path, report: RunReport) -> None:
    """Replace the figures block of ``path`` (or append one) with ``report``'s."""
    text = path.read_text() if path.exists() else ""
    block = report.markdown()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def _recovery(f: FaultRecord) -> str:
    if f.recovered_s is not None:
        return f"{f.recovered_s:.1f} s"
    if f.late_s is not None:
        return f"{f.late_s:.1f} s (past the probe timeout)"
    return "not recovered" if f.injected else "not injected"
