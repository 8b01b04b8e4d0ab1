"""make test's verdict (scripts/ci/report.py): the tests counted over every pytest summary in
the phases' logs, failures and errors together, and a failed or skipped phase named as such."""

from pathlib import Path

from scripts.ci.report import Outcome, Step, closing_line, counted_tests, failed_tests, table


def outcome(tmp_path: Path, name: str, log: str, passed: bool = True) -> Outcome:
    path = tmp_path / f"{name}.log"
    path.write_text(log)
    return Outcome(name, passed, 0, 1, path)


def test_every_pytest_summary_is_counted_failures_and_errors_together(tmp_path):
    outcomes = [
        outcome(tmp_path, "unit", "==== 3 failed, 120 passed, 2 skipped in 31.20s ====\n"),
        outcome(tmp_path, "gateway", "x\n======== 101 passed in 70.51s (0:01:10) ========\n"),
        outcome(tmp_path, "verify", "==== 1 error, 4 passed in 2.00s ====\n=== 2 errors in 1.00s ===\n"),
        Outcome.skipped("molecule gpu", "a phase it needs failed"),
    ]
    assert counted_tests(outcomes) == (225, 6)


def test_a_run_with_no_summary_counts_no_test(tmp_path):
    assert counted_tests([outcome(tmp_path, "lint", "All checks passed!\n")]) == (0, 0)
    assert closing_line(0, 0) == "tests: 0 passed, 0 failed"


def test_the_table_names_failed_and_skipped_phases_and_their_steps(tmp_path):
    failed = Outcome("molecule docker", False, 4, 145, None, [Step("verify", False, 2.0)])
    rows = table([failed, Outcome.skipped("molecule gpu", "needs")], 51, 149).splitlines()
    assert any(row.split()[:3] == ["molecule", "docker", "FAILED"] for row in rows)
    assert any(row.split()[:2] == ["verify", "FAILED"] for row in rows)
    assert any(row.split()[:3] == ["molecule", "gpu", "skipped"] for row in rows)
    assert rows[-1].split()[-1] == "200"


def test_each_failed_test_is_named_with_its_reason_and_long_reasons_are_cut(tmp_path):
    log = (
        "FAILED is how a line of output may start too\n"
        "=========================== short test summary info ============================\n"
        "FAILED molecule/default/tests/test_gateway.py::test_ready[podman] - AssertionError: 503\n"
        f"ERROR gateway/tests/test_stall.py::test_stream - {'x' * 500}\n"
        "==== 1 failed, 1 error, 4 passed in 2.00s ====\n"
    )
    lines = failed_tests([outcome(tmp_path, "molecule default", log, passed=False)])
    assert lines[0] == (
        "molecule default: FAILED molecule/default/tests/test_gateway.py::test_ready[podman] - AssertionError: 503"
    )
    assert lines[1].startswith("molecule default: ERROR gateway/tests/test_stall.py::test_stream - xxx")
    assert lines[1].endswith("...") and len(lines[1]) == len("molecule default: ") + 400
    assert len(lines) == 2
