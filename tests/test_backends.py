"""The backends are declared once (__llm_backends in roles/llm/vars/main.yml); the choices of
llm_backend and README's backend table must say the same."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, dict]:
    return yaml.safe_load((PROJECT / "roles/llm/vars/main.yml").read_text())["__llm_backends"]


def readme_table() -> dict[str, list[str]]:
    """README's backend table: backend -> its cells, without backticks."""
    text = (PROJECT / "README.md").read_text()
    header = text.index("| backend | image on GPU hosts / on CPU hosts |")
    rows = {}
    for line in text[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("`", "") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def variables(template: str) -> list[str]:
    return re.findall(r"\b(llm_[a-z_]+)", template)


def test_llm_backend_choices_are_the_declared_backends():
    specs = yaml.safe_load((PROJECT / "roles/llm/meta/argument_specs.yml").read_text())
    choices = specs["argument_specs"]["main"]["options"]["llm_backend"]["choices"]
    assert choices == list(declared())


def test_readme_backend_table_matches_the_declaration():
    table = readme_table()
    assert list(table) == list(declared())
    for name, backend in declared().items():
        images, served, _model, version, thinking = table[name]
        gpu_image, cpu_image = (part.strip() for part in images.split("/"))
        image_vars = variables(backend["image"])
        assert (gpu_image, cpu_image) == (image_vars[0], image_vars[-1]), name
        assert variables(backend["served_model"]) == [served], name
        assert (version, thinking) == (backend["version"][0], backend["thinking"]), name
