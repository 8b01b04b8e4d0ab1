"""make test's scheduler (scripts/ci/pipeline.py): phases start in list order once what they
need has passed, at most `jobs` at a time; a phase whose need failed is skipped."""

from pathlib import Path

import pytest

from scripts.ci import pipeline
from scripts.ci.phases import Phase

SLEEP = ("sleep", "0.6")


@pytest.fixture(autouse=True)
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "LOGS", tmp_path)


def started(phases: list[Phase], jobs: int) -> dict[str, float]:
    return {outcome.name: outcome.started_s for outcome in pipeline.run_all(phases, jobs)}


def test_one_slot_runs_the_phases_one_after_another_in_list_order():
    starts = started([Phase("first", SLEEP), Phase("second", SLEEP)], jobs=1)
    assert starts["first"] < 0.3
    assert starts["second"] >= 0.6, "two phases ran at once in one slot"


def test_a_phase_waits_for_what_it_needs_and_is_skipped_when_that_failed():
    phases = [
        Phase("artifact", SLEEP),
        Phase("broken", ("false",)),
        Phase("scenario", SLEEP, needs=("artifact",)),
        Phase("after broken", SLEEP, needs=("broken",)),
    ]
    outcomes = {outcome.name: outcome for outcome in pipeline.run_all(phases, jobs=4)}
    assert outcomes["scenario"].passed and outcomes["scenario"].started_s >= 0.6
    assert not outcomes["after broken"].passed and outcomes["after broken"].reason


def test_a_background_phase_starts_beside_a_full_set_of_slots_and_takes_none():
    phases = [
        Phase("in the slot", SLEEP),
        Phase("niced", SLEEP, background=True),
        Phase("next", SLEEP),
    ]
    starts = started(phases, jobs=1)
    assert starts["niced"] < 0.3, "a background phase waited for a slot"
    assert starts["next"] >= 0.6, "a background phase was counted as a free slot"
