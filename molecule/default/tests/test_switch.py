"""The backend switch, driven as a user drives it: ansible-playbook site.yml -e llm_backend=...

The second backend here is Ollama, served by the Ollama test double (see
files/ollama_test_double.py): no Ollama binary can be had on these machines. Its model is
pulled through the double's /api/pull from the double's stand-in registry.
"""

import re
import subprocess

import pytest

from conftest import PROJECT, backend_containers


def served_models(http) -> list[str]:
    return [model["id"] for model in http.get("/v1/models").json()["data"]]


def assert_gateway_routes_to(gateway, backend: str) -> None:
    """Clients of the gateway keep one model name, whichever backend answers."""
    assert gateway.get("/config").json()["backend"] == backend
    assert served_models(gateway) == ["tiny-llama"]
    reply = gateway.post(
        "/v1/chat/completions", json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "tiny-llama"


def assert_llamacpp_serving(host, http, container_id: str | None = None) -> None:
    containers = backend_containers(host)
    assert list(containers) == ["llm-llamacpp"]
    if container_id is not None:
        assert containers["llm-llamacpp"] == container_id, "the running backend was restarted"
    assert http.get("/health").status_code == 200
    assert "tiny-llama" in served_models(http)


@pytest.fixture
def llamacpp_id(host, http) -> str:
    assert_llamacpp_serving(host, http)
    return backend_containers(host)["llm-llamacpp"]


def assert_no_pull_server_left(host) -> None:
    assert "switchyard-ollama-pull" not in host.check_output("podman ps --all --format '{{.Names}}'")


def assert_pull_script_works_through_the_backend() -> None:
    """The original's pull_model_ollama.sh, run as a user runs it against Ollama on :8000."""
    script = PROJECT / "scripts/pull_model_ollama.sh"
    pulled = subprocess.run([script, "tiny"], capture_output=True, text=True, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert "success" in pulled.stdout and "done: set llm_ollama_model: tiny" in pulled.stdout
    missing = subprocess.run([script, "absent:1"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "error: pull model manifest: file does not exist" in missing.stderr


def test_switch_to_ollama_and_back(host, run_site, http, gateway):
    assert_gateway_routes_to(gateway, "llamacpp")
    manifest = host.file("/var/lib/switchyard/ollama/models/manifests/registry.ollama.ai/library/tiny/latest")
    assert not manifest.exists
    to_ollama = run_site("llm_backend=ollama")
    assert to_ollama.returncode == 0, to_ollama.output
    assert re.search(r"TASK \[models : Start the pull of tiny:latest\]\W*\nchanged:", to_ollama.output)
    assert manifest.exists, "the model was pulled into the store before the switch"
    assert_no_pull_server_left(host)
    assert host.service("llm-backend").is_running
    assert list(backend_containers(host)) == ["llm-ollama"]
    assert served_models(http) == ["tiny:latest"]
    reply = http.post(
        "/v1/chat/completions", json={"model": "tiny:latest", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert reply.status_code == 200
    assert_gateway_routes_to(gateway, "ollama")

    assert_pull_script_works_through_the_backend()

    again = run_site("llm_backend=ollama")
    assert again.returncode == 0, again.output
    assert "changed=0" in again.output, "a pulled model is not pulled again"

    back = run_site("llm_backend=llamacpp")
    assert back.returncode == 0, back.output
    assert_llamacpp_serving(host, http)
    assert_gateway_routes_to(gateway, "llamacpp")


def test_invalid_backend_is_rejected_before_anything_changes(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=tgi")
    assert run.returncode != 0
    assert "llm_backend" in run.output and "vllm, ollama, llamacpp" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_switch_to_a_model_the_registry_lacks_leaves_the_backend_serving(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=ollama", "llm_ollama_model=absent:7b")
    assert run.returncode != 0
    assert "Could not pull absent:7b" in run.output
    assert "pull model manifest: file does not exist" in run.output, "Ollama's own reason is shown"
    assert_no_pull_server_left(host)
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_switch_to_a_missing_image_leaves_the_backend_serving(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=ollama", "llm_ollama_image=localhost/switchyard/no-such-image:1")
    assert run.returncode != 0
    assert "Could not pull localhost/switchyard/no-such-image:1" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_same_settings_do_not_restart_the_backend(host, run_site, http, llamacpp_id):
    run = run_site()
    assert run.returncode == 0, run.output
    assert "changed=0" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_check_mode_reports_no_change_on_a_converged_host(host, run_site, http, llamacpp_id):
    run = run_site(check=True)
    assert run.returncode == 0, run.output
    assert "changed=0" in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_check_mode_switch_reports_changes_but_changes_nothing(host, run_site, http, llamacpp_id):
    run = run_site("llm_backend=ollama", check=True)
    assert run.returncode == 0, run.output
    assert "changed=0" not in run.output
    assert_llamacpp_serving(host, http, llamacpp_id)


def test_changed_settings_restart_the_backend(host, run_site, http, llamacpp_id):
    run = run_site("llm_max_model_len=256")
    assert run.returncode == 0, run.output
    assert backend_containers(host)["llm-llamacpp"] != llamacpp_id
    assert "--ctx-size 256" in host.file("/etc/systemd/system/llm-backend.service").content_string.replace("'", "")
    restore = run_site()
    assert restore.returncode == 0, restore.output


def test_backend_that_fails_to_start_is_rolled_back(host, run_site, http):
    good_unit = host.file("/etc/systemd/system/llm-backend.service").content_string
    run = run_site('{"llm_llamacpp_extra_args": ["--no-such-flag"], "llm_health_timeout": 20}')
    assert run.returncode != 0
    assert "rolled back to its last healthy unit" in run.output
    assert "no-such-flag" in run.output, "the failure shows the journal of llm-backend"
    assert host.file("/etc/systemd/system/llm-backend.service").content_string == good_unit
    assert_llamacpp_serving(host, http)
