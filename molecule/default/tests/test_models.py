"""Model downloads from Hugging Face, driven as a user drives them, against a stand-in Hub.

The Hub cannot be reached from these machines, so files/hf_hub_stand_in.py serves its
download API on 127.0.0.1 (the sandbox shares this machine's network); everything on the
host side is real: huggingface-hub installed from the sandbox's wheelhouse, `hf download`,
the role's background download, progress lines and completion marks.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import PLAYBOOK_ENV, PROJECT, backend_containers, site_command

HUB_PORT = 8766
GGUF_REPO, GGUF = "switchyard/tiny-gguf", "tiny-downloaded.gguf"
EMBEDDER_REPO = "switchyard/tiny-embedder"
TOKEN = "hf_switchyard_stand_in_token_0001"
# In the run lock's runtime directory: gone with the lock, however the run ends.
TOKEN_FILE = "/run/switchyard-run/hf-token"


@dataclass
class Hub:
    url: str
    root: Path
    log: Path

    def requests(self, path_part: str) -> list[dict]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [entry for entry in map(json.loads, lines) if path_part in entry["path"]]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("hub")
    gguf = root / GGUF_REPO / GGUF
    gguf.parent.mkdir(parents=True)
    # Larger than huggingface-hub's 10 MiB read chunk, so that the dropped first transfer
    # leaves bytes on disk to resume from.
    gguf.write_bytes(os.urandom(25_000_000))
    embedder = root / EMBEDDER_REPO
    embedder.mkdir(parents=True)
    (embedder / "config.json").write_text('{"architectures": ["BertModel"]}\n')
    # Slow enough at --pace to watch the host while it downloads (about 4 s).
    (embedder / "model.safetensors").write_bytes(os.urandom(12_000_000))
    log = root.parent / "requests.jsonl"
    command = [
        sys.executable,
        str(PROJECT / "molecule/default/files/hf_hub_stand_in.py"),
        f"--root={root}",
        f"--port={HUB_PORT}",
        f"--log={log}",
        f"--drop-once={GGUF}",
        "--pace=3000",
    ]
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{HUB_PORT}"
    for _ in range(50):
        assert server.poll() is None, f"the stand-in Hub did not start (port {HUB_PORT} in use?)"
        try:
            httpx.get(f"{url}/api/models/none/none/revision/main")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield Hub(url, root, log)
    server.terminate()
    server.wait()


def from_hub(hub: Hub, *extra_vars: str) -> list[str]:
    """Settings that make the sandbox download from the stand-in Hub instead of copying."""
    return ["models_source_dir=", f"models_hf_endpoint={hub.url}", "models_progress_interval=5", *extra_vars]


def test_gguf_download_resumes_shows_progress_and_is_not_fetched_twice(host, run_site, hub):
    settings = from_hub(hub, f"models_llamacpp_repo={GGUF_REPO}", f"llm_llamacpp_model_file={GGUF}")
    run = run_site(*settings, playbook="playbooks/models.yml")
    assert run.returncode == 0, run.output
    assert f"{GGUF_REPO}: " in run.output and "downloaded so far" in run.output
    expected = hashlib.sha256((hub.root / GGUF_REPO / GGUF).read_bytes()).hexdigest()
    assert host.file(f"/var/lib/switchyard/llamacpp/{GGUF}").sha256sum == expected
    transfers = [entry["range"] for entry in hub.requests(GGUF) if entry["method"] == "GET"]
    assert len(transfers) == 2, transfers
    assert transfers[0] is None and transfers[1].startswith("bytes=") and transfers[1] != "bytes=0-", (
        "the interrupted transfer was resumed, not restarted"
    )

    asked = len(hub.requests(GGUF))
    again = run_site(*settings, playbook="playbooks/models.yml")
    assert again.returncode == 0, again.output
    assert "changed=0" in again.output
    assert len(hub.requests(GGUF)) == asked, "a completed download is not asked for again"


def test_a_file_the_repo_lacks_fails_naming_it_and_leaves_the_backend_serving(host, run_site, hub, http):
    before = backend_containers(host)
    run = run_site(*from_hub(hub, f"models_llamacpp_repo={GGUF_REPO}", "llm_llamacpp_model_file=absent.gguf"))
    assert run.returncode != 0
    assert f"Could not download absent.gguf from {GGUF_REPO} (revision main) from {hub.url}" in run.output
    assert "File not found in repository" in run.output, "huggingface-hub's own reason is shown"
    assert backend_containers(host) == before
    assert http.get("/health").status_code == 200


def test_snapshot_lands_as_a_cache_entry_and_the_token_is_neither_shown_logged_nor_stored(host, hub, tmp_path):
    """While `hf` downloads, the token is in no process's arguments or environment on the
    host (`ps`, /proc/*/environ), only in a root-only file that is gone afterwards; a -vvv
    run does not print it, and neither the journal nor /var/log holds it."""
    embedder = ("llm_embedding_enabled=true", f"llm_embedding_model={EMBEDDER_REPO}")
    settings = from_hub(hub, *embedder, f"models_hf_token={TOKEN}")
    command = [*site_command(PROJECT / "molecule/default", *settings, playbook="playbooks/models.yml"), "-vvv"]
    log = tmp_path / "run.log"
    with log.open("w") as output:
        run = subprocess.Popen(command, cwd=PROJECT, env=PLAYBOOK_ENV, stdout=output, stderr=subprocess.STDOUT)
    watch = "ps -eo args; cat /proc/[0-9]*/environ | tr '\\0' '\\n'; stat -c %a:%U /run/switchyard-run/hf-token"
    seen_downloading, token_file_modes = False, set()
    while run.poll() is None:
        processes = host.run(watch).stdout
        assert TOKEN not in processes, "the token is visible in a process's arguments or environment"
        seen_downloading |= f"hf download {EMBEDDER_REPO}" in processes
        token_file_modes |= {line for line in processes.splitlines() if line.endswith(":root")}
        time.sleep(0.2)
    output = log.read_text()
    assert run.returncode == 0, output[-3000:]
    assert seen_downloading, "the download ran while the host was watched"
    assert token_file_modes == {"600:root"}
    assert {entry["token"] for entry in hub.requests(EMBEDDER_REPO)} == {TOKEN}, "every request carried the token"
    assert TOKEN not in output
    snapshots = "/var/lib/switchyard/huggingface/hub/models--switchyard--tiny-embedder/snapshots"
    assert "BertModel" in host.check_output(f"cat {snapshots}/*/config.json")
    assert not host.file(TOKEN_FILE).exists
    stored = host.run(f"grep -rl {TOKEN} /etc /root /run /var/lib/switchyard /opt/switchyard /tmp /var/log")
    assert stored.rc == 1, f"the token is stored on the host: {stored.stdout}"
    assert TOKEN not in host.check_output("journalctl --no-pager -o cat"), "the token is in the journal"


def test_a_run_interrupted_during_the_downloads_leaves_no_token_behind(host, hub):
    """Ctrl-C while the token file is there: ansible-playbook ends without its `always`
    cleanup, and the file goes with the run lock that its guard releases."""
    embedder = ("llm_embedding_enabled=true", f"llm_embedding_model={EMBEDDER_REPO}")
    settings = from_hub(hub, *embedder, f"models_hf_token={TOKEN}")
    # Downloaded again: the token file stays for the time of a download.
    host.run_expect([0], f"rm -f /var/lib/switchyard/models-complete/{EMBEDDER_REPO.replace('/', '--')}@*")
    command = site_command(PROJECT / "molecule/default", *settings, playbook="playbooks/models.yml")
    run = subprocess.Popen(
        command, cwd=PROJECT, env=PLAYBOOK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not host.file(TOKEN_FILE).exists:
        assert run.poll() is None, "the run ended before the token file was seen"
        assert time.monotonic() < deadline, "the token file never appeared"
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGINT)
    run.wait()
    died = time.monotonic()
    while host.file(TOKEN_FILE).exists:
        assert time.monotonic() - died < 10, "the token file outlived the interrupted run by 10 s"
        time.sleep(0.1)
    print(f"the token file was gone {time.monotonic() - died:.1f} s after the run died")
    stored = host.run(f"grep -rl {TOKEN} /run /tmp")
    assert stored.rc == 1, f"the token is stored on the host: {stored.stdout}"
    again = subprocess.run(command, cwd=PROJECT, env=PLAYBOOK_ENV, capture_output=True, text=True, check=False)
    assert again.returncode == 0, "the next run converges: " + again.stdout[-3000:]


def test_the_download_scripts_take_the_originals_arguments(hub, tmp_path):
    """download_model_llamacpp.sh REPO FILE and download_model_vllm.sh REPO, run by hand here."""
    env = os.environ | {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "huggingface"),
        "LLAMACPP_MODELS_DIR": str(tmp_path / "llamacpp"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }

    def script(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PROJECT / "scripts" / name, *args], env=env, capture_output=True, text=True, check=False)

    gguf = script("download_model_llamacpp.sh", GGUF_REPO, GGUF)
    assert gguf.returncode == 0, gguf.stderr
    assert f"done: set llm_llamacpp_model_file: {GGUF}" in gguf.stdout
    assert (tmp_path / "llamacpp" / GGUF).read_bytes() == (hub.root / GGUF_REPO / GGUF).read_bytes()

    snapshot = script("download_model_vllm.sh", EMBEDDER_REPO)
    assert snapshot.returncode == 0, snapshot.stderr
    entry = tmp_path / "huggingface/hub/models--switchyard--tiny-embedder"
    assert sorted(path.name for path in entry.glob("snapshots/*/*")) == ["config.json", "model.safetensors"]

    missing = script("download_model_llamacpp.sh", GGUF_REPO, "absent.gguf")
    assert missing.returncode != 0
    assert "absent.gguf" in missing.stderr
    usage = script("download_model_llamacpp.sh", GGUF_REPO)
    assert usage.returncode == 2 and "usage:" in usage.stderr
