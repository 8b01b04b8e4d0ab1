"""What each phase of `make test` did: its outcome, its time, the tests it counted."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# pytest's closing line, e.g. "==== 3 failed, 120 passed, 2 skipped in 31.20s ====".
PYTEST_SUMMARY = re.compile(r"^=+ (?P<counts>\d+ \w+.*) in [\d.]+s(?: \([\d:]+\))? =+$", re.MULTILINE)
COUNT = re.compile(r"(\d+) (passed|failed|errors?)")
# pytest's short test summary (its default -rfE): "FAILED path::test - reason", "ERROR path::test".
FAILED_TEST = re.compile(r"^(?:FAILED|ERROR) \S+::\S.*$", re.MULTILINE)
# The end of a run is what a CI page shows: each failed test on one line, long reasons cut.
FAILED_TEST_WIDTH = 400


@dataclass(frozen=True)
class Step:
    """One Molecule action of a scenario (create, converge, idempotence, verify, destroy)."""

    action: str
    passed: bool
    seconds: float


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    started_s: float
    seconds: float
    log: Path | None = None
    steps: list[Step] = field(default_factory=list)
    reason: str = ""

    @classmethod
    def skipped(cls, name: str, reason: str) -> Outcome:
        return cls(name, False, 0, 0, reason=reason)

    def print_log(self) -> None:
        """The phase's whole log, printed in one piece once it has ended."""
        verdict = "passed" if self.passed else "FAILED"
        print(f"\n===== {self.name}: {verdict} in {self.seconds:.0f} s =====", flush=True)
        if self.log is not None:
            print(self.log.read_text(errors="replace"), flush=True)
        print(f"===== end of {self.name}: {verdict} =====", flush=True)


def counted_tests(outcomes: list[Outcome]) -> tuple[int, int]:
    """Tests passed and failed (errors included), over every pytest summary in the logs."""
    passed = failed = 0
    for outcome in outcomes:
        if outcome.log is None or not outcome.log.exists():
            continue
        for summary in PYTEST_SUMMARY.finditer(outcome.log.read_text(errors="replace")):
            for number, kind in COUNT.findall(summary["counts"]):
                if kind == "passed":
                    passed += int(number)
                else:
                    failed += int(number)
    return passed, failed


def failed_tests(outcomes: list[Outcome]) -> list[str]:
    """Each failed or erroring test with its reason, from every phase's pytest summaries, so
    that the end of the run says which tests failed and why without the logs."""
    lines = []
    for outcome in outcomes:
        if outcome.log is None or not outcome.log.exists():
            continue
        for line in FAILED_TEST.findall(outcome.log.read_text(errors="replace")):
            shown = line if len(line) <= FAILED_TEST_WIDTH else line[: FAILED_TEST_WIDTH - 3] + "..."
            lines.append(f"{outcome.name}: {shown}")
    return lines


def closing_line(passed: int, failed: int) -> str:
    return f"tests: {passed} passed, {failed} failed"


def table(outcomes: list[Outcome], bootstrap_s: float, wall_s: float) -> str:
    """Every phase's start and duration, with each scenario's steps beneath it."""
    rows = [("phase", "result", "start", "seconds")]
    if bootstrap_s:
        rows.append(("bootstrap (apt, venv)", "passed", "-", f"{bootstrap_s:.0f}"))
    for outcome in outcomes:
        result = "passed" if outcome.passed else ("skipped" if outcome.reason else "FAILED")
        rows.append((outcome.name, result, f"{outcome.started_s:.0f}", f"{outcome.seconds:.0f}"))
        for step in outcome.steps:
            rows.append((f"  {step.action}", "passed" if step.passed else "FAILED", "", f"{step.seconds:.0f}"))
    rows.append(("wall clock, bootstrap included", "", "", f"{wall_s + bootstrap_s:.0f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}" for row in rows
    ]
    return "\n== make test: time per phase (seconds; start is from the first phase's) ==\n" + "\n".join(lines)
