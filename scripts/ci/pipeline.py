"""Everything `make test` runs, as phases that start as soon as what they need is built.

Most of a Molecule scenario's time is waiting (health polls, model loads, drains), so the
scenarios run side by side, each in a network namespace of its own (lanes.py): every sandbox
host keeps the ports README names (8000, 8080, SSH on 2222) on its own loopback, and the tests
talk to 127.0.0.1 as a user on the host would. Each phase writes a log of its own, printed
whole when it ends; the end of the run prints a table of every phase's time (and each
scenario's create / converge / idempotence / verify / destroy), each failed test with its
reason, and one closing line of the tests counted over every pytest run. Any failed phase
makes the run fail; so does a run in which no test passed.

Usage: python -m scripts.ci.pipeline [PHASE ...]   (default: every phase; a phase named
runs with the phases it needs)
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from scripts.ci.phases import PHASES, Phase, needed
from scripts.ci.report import Outcome, closing_line, counted_tests, failed_tests, table

PROJECT = Path(__file__).resolve().parents[2]
LOGS = PROJECT / ".cache" / "ci-logs"
# Phases running at once, the background ones (niced) not counted. The scenarios' sandbox hosts
# spend part of their time waiting (health polls, restarts, model loads); the run as a whole is
# CPU-bound on two cores, so more would only stretch each scenario's timed waits
# (docs/testing.md, for the measured runs).
DEFAULT_JOBS = 4


def run_all(phases: list[Phase], jobs: int) -> list[Outcome]:
    """Runs every phase once all it needs has passed, in list order: at most `jobs` at a time,
    besides the background phases, which start as soon as what they need has passed. Niced,
    they take what CPU the others leave; in a slot, they kept the longest scenarios waiting
    (docs/testing.md)."""
    started_at = time.monotonic()
    waiting = list(phases)
    outcomes: dict[str, Outcome] = {}
    running: dict[Future[Outcome], Phase] = {}
    with ThreadPoolExecutor(max_workers=len(phases) or 1) as pool:
        while waiting or running:
            for phase in list(waiting):
                if any(outcomes.get(need) and not outcomes[need].passed for need in phase.needs):
                    waiting.remove(phase)
                    outcomes[phase.name] = Outcome.skipped(phase.name, "a phase it needs failed")
                    print(f"--- {phase.name}: skipped, a phase it needs failed", flush=True)
                elif (phase.background or in_slots(running) < jobs) and all(need in outcomes for need in phase.needs):
                    waiting.remove(phase)
                    print(f"--- {phase.name}: started at {time.monotonic() - started_at:.0f} s", flush=True)
                    running[pool.submit(phase.run, LOGS, started_at)] = phase
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                outcome = future.result()
                outcomes[running.pop(future).name] = outcome
                outcome.print_log()
    return [outcomes[phase.name] for phase in phases]


def in_slots(running: dict[Future[Outcome], Phase]) -> int:
    return sum(not phase.background for phase in running.values())


def main(argv: list[str]) -> int:
    os.chdir(PROJECT)
    LOGS.mkdir(parents=True, exist_ok=True)
    wanted = needed(argv) if argv else PHASES
    jobs = int(os.environ.get("SWITCHYARD_CI_JOBS", DEFAULT_JOBS))
    started = time.monotonic()
    outcomes = run_all(wanted, jobs)
    bootstrap_s = float(os.environ.get("SWITCHYARD_CI_BOOTSTRAP_S", "0"))
    print(table(outcomes, bootstrap_s, time.monotonic() - started))
    passed, failed = counted_tests(outcomes)
    failures = [outcome.name for outcome in outcomes if not outcome.passed]
    if failures:
        print("FAILED phases: " + ", ".join(failures) + f" (logs in {LOGS.relative_to(PROJECT)}/)")
        for line in failed_tests(outcomes):
            print("  " + line)
    elif passed == 0:
        print("no test ran: that is a failure")
    print(closing_line(passed, failed))
    return 1 if failures or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
