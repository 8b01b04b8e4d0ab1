"""One home for each setting: roles/switchyard_defaults holds every setting's default (role
defaults, the lowest rank, so any value an operator writes wins), and exactly one role's
meta/argument_specs.yml types it. The specs carry no second copy of the defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "filter_plugins"))
import switchyard  # noqa: E402  (the filters the check play uses)

DEFAULTS_ROLE = "switchyard_defaults"
ROLES = sorted(path.name for path in (PROJECT / "roles").iterdir() if path.is_dir() and path.name != DEFAULTS_ROLE)


def defaults() -> dict[str, object]:
    values: dict[str, object] = {}
    for path in sorted((PROJECT / "roles" / DEFAULTS_ROLE / "defaults/main").glob("*.yml")):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            assert name not in values, f"{name} is set in two defaults files"
            values[name] = value
    return values


def spec_options(role: str) -> dict[str, dict]:
    """The settings a role types: its options less its parameters (required, passed by a play)."""
    specs = yaml.safe_load((PROJECT / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]
    return switchyard.settings_options(specs["main"]["options"])


def test_no_other_role_keeps_defaults_of_its_own():
    assert [role for role in ROLES if (PROJECT / "roles" / role / "defaults").exists()] == []


@pytest.mark.parametrize("role", ROLES)
def test_every_typed_setting_has_one_default_and_no_copy_in_the_spec(role):
    values = defaults()
    for name, option in spec_options(role).items():
        assert name in values, f"{role}: {name} is typed but has no default in roles/{DEFAULTS_ROLE}"
        assert "default" not in option, f"{role}: {name} has a second default in meta/argument_specs.yml"


def test_each_setting_is_typed_by_exactly_one_role():
    typed: dict[str, list[str]] = {}
    for role in ROLES:
        for name in spec_options(role):
            typed.setdefault(name, []).append(role)
    assert {name: roles for name, roles in typed.items() if len(roles) > 1} == {}
    assert sorted(set(defaults()) - set(typed)) == []
