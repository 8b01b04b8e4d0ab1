"""The sandbox host's byte-code cache for modules imported from zips (scripts/sandbox/zipimport_cache.py):
a module compiled once is loaded from the cache by the next process that imports the same
source, from a zip of another path, as each Ansible task's AnsiballZ zip is; another source is
compiled anew. Each import runs in a Python process of its own, as each task does."""

import marshal
import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def import_from_zip(tmp_path: Path, zip_name: str, source: str, cache: Path) -> str:
    """VALUE of module `probe` imported from a new zip holding `source`, with the cache on."""
    archive = tmp_path / zip_name / "payload.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("probe.py", source)
    script = (
        f"import sys; sys.path.insert(0, {str(PROJECT / 'scripts/sandbox')!r})\n"
        f"import zipimport_cache; zipimport_cache.CACHE = {str(cache)!r}\n"
        f"sys.path.insert(0, {str(archive)!r}); import probe; print(probe.VALUE)\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_a_module_compiled_once_is_loaded_from_the_cache_and_another_source_is_compiled(tmp_path):
    cache = tmp_path / "cache"
    assert import_from_zip(tmp_path, "first-task", "VALUE = 1\n", cache) == "1"
    (entry,) = cache.iterdir()
    # What the next import loads is what the cache holds: replaced here, it shows.
    entry.write_bytes(marshal.dumps(compile("VALUE = 'from the cache'\n", "probe.py", "exec")))
    assert import_from_zip(tmp_path, "second-task", "VALUE = 1\n", cache) == "from the cache"
    assert import_from_zip(tmp_path, "third-task", "VALUE = 2\n", cache) == "2"
    assert len(list(cache.iterdir())) == 2
