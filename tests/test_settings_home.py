"""One home for each setting: group_vars/all/ holds every inventory-facing value, and each
role's meta/argument_specs.yml types it with the same default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
ROLES = sorted(path.name for path in (PROJECT / "roles").iterdir() if path.is_dir())


def group_vars() -> dict[str, object]:
    values: dict[str, object] = {}
    for path in sorted((PROJECT / "group_vars/all").glob("*.yml")):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            assert name not in values, f"{name} is set in two group_vars files"
            values[name] = value
    return values


def spec_options(role: str) -> dict[str, dict]:
    specs = yaml.safe_load((PROJECT / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]
    return specs["main"]["options"]


def test_no_role_keeps_defaults_of_its_own():
    assert [role for role in ROLES if (PROJECT / "roles" / role / "defaults").exists()] == []


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_defaults_are_the_values_a_run_uses(role):
    values = group_vars()
    for name, option in spec_options(role).items():
        assert name in values, f"{role}: {name} is typed but has no value in group_vars/all"
        if "default" in option:
            assert option["default"] == values[name], f"{role}: {name}"


def test_each_setting_is_typed_by_exactly_one_role():
    typed: dict[str, list[str]] = {}
    for role in ROLES:
        for name in spec_options(role):
            typed.setdefault(name, []).append(role)
    assert {name: roles for name, roles in typed.items() if len(roles) > 1} == {}
    assert sorted(set(group_vars()) - set(typed)) == []
