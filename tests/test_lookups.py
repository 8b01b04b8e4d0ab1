"""The project's lookup plugins (lookup_plugins/), one behaviour per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "lookup_plugins"))

import switchyard_source  # noqa: E402


def test_a_part_of_the_checkout_is_found_wherever_the_run_starts(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (found,) = switchyard_source.LookupModule().run(["gateway"])
    assert found == str(PROJECT / "gateway")
    assert (Path(found) / "requirements.txt").is_file()


def test_a_part_the_checkout_lacks_fails_naming_it():
    with pytest.raises(AnsibleLookupError, match="no-such-part"):
        switchyard_source.LookupModule().run(["no-such-part"])
