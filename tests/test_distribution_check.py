"""The roles stop early, with the list of what they support, on any other distribution."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def check(distribution: str, version: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    extra = f"distribution={distribution} major={version.split('.')[0]} version={version}"
    return subprocess.run(
        ["ansible-playbook", "--inventory=localhost,", str(PROJECT / "tests/distribution_check.yml"), "-e", extra],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("distribution", "version"), [("Ubuntu", "24.04"), ("Debian", "12"), ("Debian", "13")])
def test_supported_distributions_pass(distribution, version):
    done = check(distribution, version)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(("distribution", "version"), [("Ubuntu", "22.04"), ("Rocky", "9.4"), ("Debian", "11")])
def test_other_distributions_fail_early_with_the_supported_list(distribution, version):
    done = check(distribution, version)
    assert done.returncode != 0
    assert f"{distribution} {version} is not supported" in done.stdout
    assert "Ubuntu 24.04 (primary), Debian 12 or Debian 13" in done.stdout
