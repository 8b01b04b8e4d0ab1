"""The units the llm role renders for real GPU hosts: every backend, engine and GPU setting.

The sandbox host only runs the CPU llama.cpp variant, so the other variants are rendered
here with the role's own template and defaults, checked for what each engine needs, and
verified by systemd-analyze.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from switchyard_gateway.keys import ApiKey, read_key_file
from switchyard_gateway.reload import ANNOUNCED

PROJECT = Path(__file__).resolve().parents[1]
BACKENDS = ("vllm", "ollama", "llamacpp")
ENGINES = ("podman", "docker")
SERVICES = (*BACKENDS, "embedding", "reranker")
PROBE = "/usr/local/libexec/switchyard/ready"
ANNOUNCE = "/usr/local/libexec/switchyard/announce"


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("units")
    env = os.environ | {"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}
    subprocess.run(
        [
            "ansible-playbook",
            "--inventory=localhost,",
            str(PROJECT / "tests/render_units.yml"),
            "-e",
            f"render_dir={out}",
        ],
        cwd=PROJECT,
        env=env,
        check=True,
        capture_output=True,
    )
    return out


def exec_lines(unit: Path, key: str) -> list[list[str]]:
    text = unit.read_text().replace("\\\n", " ")
    return [shlex.split(line.removeprefix(f"{key}=")) for line in text.splitlines() if line.startswith(f"{key}=")]


def exec_line(unit: Path, key: str = "ExecStart") -> list[str]:
    return exec_lines(unit, key)[0]


def exec_start(unit: Path) -> list[str]:
    return exec_line(unit)


def option(argv: list[str], flag: str) -> str:
    """The value that follows a flag in an argument list."""
    return argv[argv.index(flag) + 1]


def variants():
    for name in SERVICES:
        for engine in ENGINES:
            for gpu in ("gpu", "cpu"):
                yield name, engine, gpu


@pytest.mark.parametrize(("name", "engine", "gpu"), list(variants()))
def test_gpu_access_matches_the_engine(units, name, engine, gpu):
    argv = exec_start(units / f"{name}-{engine}-{gpu}.service")
    cdi = "--device" in argv and "nvidia.com/gpu=all" in argv
    docker_gpus = "--gpus" in argv and "all" in argv
    if gpu == "cpu":
        assert not cdi and not docker_gpus
    elif engine == "podman":
        assert cdi and not docker_gpus
    else:
        assert docker_gpus and not cdi


@pytest.mark.parametrize(
    ("name", "podman_devices", "docker_gpus"),
    [
        ("vllm", ["nvidia.com/gpu=0"], '"device=0"'),
        ("embedding", ["nvidia.com/gpu=1"], '"device=1"'),
        ("reranker", ["nvidia.com/gpu=1", "nvidia.com/gpu=GPU-5a3c4d1e-0f6b-7c8d-9e0f-1a2b3c4d5e6f"],
         '"device=1,GPU-5a3c4d1e-0f6b-7c8d-9e0f-1a2b3c4d5e6f"'),
    ],
)  # fmt: skip
def test_each_service_gets_the_gpus_of_its_own_setting(units, name, podman_devices, docker_gpus):
    podman = exec_start(units / f"{name}-podman-gpu-devices.service")
    assert [podman[index + 1] for index, word in enumerate(podman) if word == "--device"][: len(podman_devices)] == (
        podman_devices
    )
    assert "nvidia.com/gpu=all" not in podman
    docker = exec_start(units / f"{name}-docker-gpu-devices.service")
    assert option(docker, "--gpus") == docker_gpus


@pytest.mark.parametrize(
    ("name", "own"), [("vllm", "--chat-only"), ("embedding", "--pooling-only"), ("reranker", "--pooling-only")]
)
def test_each_vllm_server_gets_the_further_arguments_of_its_own_setting(units, name, own):
    """llm_vllm_extra_args are the chat backend's, llm_vllm_pooling_extra_args the two pooling
    servers': at the end of the server's arguments, after the image, and nowhere else."""
    argv = exec_start(units / f"{name}-extra-args.service")
    (other,) = {"--chat-only", "--pooling-only"} - {own}
    assert argv[-2:] == ["--enforce-eager", own]
    assert other not in argv


@pytest.mark.parametrize("name", SERVICES)
def test_podman_units_hand_systemd_the_container_state(units, name):
    text = (units / f"{name}-podman-gpu.service").read_text()
    argv = exec_start(units / f"{name}-podman-gpu.service")
    assert "Type=notify" in text and "NotifyAccess=all" in text
    for flag in ("--sdnotify=conmon", "--cgroups=split", "--cidfile=%t/%n.ctr-id", "--replace", "--rm"):
        assert flag in argv
    assert "ExecStartPre=/usr/bin/rm --force %t/%n.ctr-id" in text
    assert "ExecStop=/usr/bin/podman stop --ignore --time=10 --cidfile=%t/%n.ctr-id" in text


@pytest.mark.parametrize("name", BACKENDS)
def test_docker_units_remove_any_stale_backend_container_first(units, name):
    text = (units / f"{name}-docker-gpu.service").read_text()
    assert "ExecStartPre=-/usr/bin/docker rm --force llm-vllm llm-ollama llm-llamacpp" in text
    assert exec_start(units / f"{name}-docker-gpu.service")[:3] == ["/usr/bin/docker", "run", "--rm"]
    assert "--pull=never" in exec_start(units / f"{name}-docker-gpu.service"), "a unit never waits on a download"
    assert f"ExecStopPost=-/usr/bin/docker rm --force llm-{name}" in text, "a container left by a crash goes"


@pytest.mark.parametrize(("name", "engine", "gpu"), list(variants()))
def test_units_restart_at_once_and_give_the_load_the_health_timeout(units, name, engine, gpu):
    text = (units / f"{name}-{engine}-{gpu}.service").read_text().splitlines()
    assert {"Restart=on-failure", "RestartSec=2", "TimeoutStartSec=900"} <= set(text)
    assert text[0] == "#"  # the ansible_managed header


@pytest.mark.parametrize(("name", "engine", "gpu"), list(variants()))
def test_units_count_as_started_only_once_they_serve(units, name, engine, gpu):
    """ExecStartPost runs the type-aware readiness probe under the name the service serves."""
    expected = {
        "vllm": ["http://127.0.0.1:8000", "chat", "qwen3-8b"],
        "llamacpp": ["http://127.0.0.1:8000", "chat", "qwen3-8b"],
        "ollama": ["http://127.0.0.1:8000", "chat", "qwen3:8b"],
        "embedding": ["http://127.0.0.1:8001", "embedding", "BAAI/bge-m3"],
        "reranker": ["http://127.0.0.1:8002", "reranker", "BAAI/bge-reranker-v2-m3"],
    }[name]
    assert exec_line(units / f"{name}-{engine}-{gpu}.service", "ExecStartPost") == [PROBE, *expected]


@pytest.mark.parametrize(("name", "engine", "gpu"), list(variants()))
def test_a_backend_announces_itself_to_the_gateway_once_it_serves(units, name, engine, gpu):
    """After its readiness probe, a backend's unit tells the gateway what now serves, in
    exactly the settings the gateway takes from it; embedding and reranker announce nothing."""
    probe, *announce = exec_lines(units / f"{name}-{engine}-{gpu}.service", "ExecStartPost")
    if name not in BACKENDS:
        assert announce == []
        return
    (command,) = announce
    assert command[:3] == [ANNOUNCE, "/run/switchyard/backend.env", "llm-gateway.service"]
    settings = dict(word.split("=", 1) for word in command[3:])
    assert set(settings) == set(ANNOUNCED)
    assert settings["SWITCHYARD_GATEWAY_BACKEND"] == name
    assert settings["SWITCHYARD_GATEWAY_BACKEND_MODEL"] == probe[3], "announced another name than it serves"


@pytest.mark.parametrize(("name", "engine"), [(name, engine) for name in SERVICES for engine in ENGINES])
def test_gpu_units_wait_for_the_gpu_at_boot(units, name, engine):
    after = "After=nvidia-persistenced.service nvidia-cdi-refresh.service"
    assert after in (units / f"{name}-{engine}-gpu.service").read_text().splitlines()
    assert after not in (units / f"{name}-{engine}-cpu.service").read_text().splitlines()


@pytest.mark.parametrize(("name", "engine", "gpu"), list(variants()))
def test_every_container_is_confined_and_reads_its_models_read_only(units, name, engine, gpu):
    argv = exec_start(units / f"{name}-{engine}-{gpu}.service")
    assert "--cap-drop=all" in argv and not any(arg.startswith("--cap-add") for arg in argv)
    assert "--security-opt=no-new-privileges" in argv
    assert "--pids-limit=4096" in argv
    assert "--ipc=private" in argv and "--ipc" not in argv  # not the host's (--ipc host)
    assert "--privileged" not in argv
    # The containers' own account, by number (render_units.yml gives it 998:997), never root.
    assert [arg for arg in argv if arg.startswith(("--user", "-u"))] == ["--user=998:997"]
    # Named for programs that look it up: Docker adds no /etc/passwd entry for it.
    assert "USER=switchyard-llm" in [argv[index + 1] for index, arg in enumerate(argv) if arg == "--env"]
    volumes = [argv[index + 1] for index, arg in enumerate(argv) if arg == "--volume"]
    # Ollama manages its own store: pull_model_ollama.sh pulls through the running server.
    writable = ["/var/lib/switchyard/ollama:/ollama/.ollama"] if name == "ollama" else []
    assert volumes and [volume for volume in volumes if not volume.endswith(":ro")] == writable, volumes


@pytest.mark.parametrize("name", ["vllm", "embedding", "reranker"])
def test_vllm_units_serve_the_downloaded_files_offline_and_report_nothing(units, name):
    argv = exec_start(units / f"{name}-podman-gpu.service")
    env = {argv[index + 1] for index, word in enumerate(argv) if word == "--env"}
    assert env == {
        "HF_HUB_OFFLINE=1",
        "HF_HOME=/var/cache/huggingface",
        "HOME=/tmp",
        "USER=switchyard-llm",
        "VLLM_NO_USAGE_STATS=1",
        "DO_NOT_TRACK=1",
    }
    assert "/var/lib/switchyard/huggingface:/var/cache/huggingface:ro" in argv


def test_vllm_unit_carries_the_seed_settings(units):
    argv = exec_start(units / "vllm-podman-gpu.service")
    assert option(argv, "docker.io/vllm/vllm-openai:v0.12.0") == "Qwen/Qwen3-8B-AWQ"
    expected = {
        "--served-model-name": "qwen3-8b",
        "--quantization": "awq",
        "--gpu-memory-utilization": "0.65",
        "--kv-cache-dtype": "fp8",
        "--max-model-len": "8192",
        "--reasoning-parser": "qwen3",
        "--host": "127.0.0.1",
        "--port": "8000",
    }
    assert {flag: option(argv, flag) for flag in expected} == expected
    assert option(argv, "--shm-size") == "8g"
    # The revision the models role downloaded, not whatever the Hub serves at start.
    assert option(argv, "--revision") == "main"


def test_vllm_schedules_by_priority_only_when_asked(units):
    assert "--scheduling-policy" not in exec_start(units / "vllm-podman-gpu.service")
    assert option(exec_start(units / "vllm-podman-gpu-priority.service"), "--scheduling-policy") == "priority"


def test_the_key_file_reads_back_as_the_gateway_reads_it(units):
    keys = read_key_file(units / "gateway-api-keys")
    assert keys == (
        ApiKey("sk-original-api-key-0001", "key-1"),
        ApiKey("sk-second-api-key-00002", "key-2"),
        ApiKey("sk-batch-api-key-000003", "batch", max_in_flight=4, priority=10, slot=0),
    )


def test_vllm_cpu_unit_uses_the_cpu_image_without_gpu_settings(units):
    argv = exec_start(units / "vllm-podman-cpu.service")
    assert "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.12.0" in argv
    assert "--gpu-memory-utilization" not in argv and "--kv-cache-dtype" not in argv


def test_ollama_unit_carries_the_seed_settings(units):
    argv = exec_start(units / "ollama-podman-gpu.service")
    assert "OLLAMA_HOST=127.0.0.1:8000" in argv
    assert "OLLAMA_NUM_PARALLEL=2" in argv
    # Ollama's store is its ~/.ollama: HOME points at its mount.
    assert "/var/lib/switchyard/ollama:/ollama/.ollama" in argv and "HOME=/ollama" in argv
    assert argv[-1] == "docker.io/ollama/ollama:0.14.0"


def test_llamacpp_unit_carries_the_seed_settings(units):
    argv = exec_start(units / "llamacpp-podman-gpu.service")
    assert "ghcr.io/ggml-org/llama.cpp:server-cuda-b12464" in argv
    assert option(argv, "--model") == "/models/qwen3-8b-q4_k_m.gguf"
    assert option(argv, "--n-gpu-layers") == "99"
    assert option(argv, "--alias") == "qwen3-8b"
    # "qwen3" means the template embedded in the GGUF: no --chat-template override.
    assert "--chat-template" not in argv and "--jinja" in argv
    assert "--n-gpu-layers" not in exec_start(units / "llamacpp-podman-cpu.service")


POOLING = (("embedding", "8001", "BAAI/bge-m3"), ("reranker", "8002", "BAAI/bge-reranker-v2-m3"))


def served_by(argv: list[str]) -> str:
    """Which pooling engine a unit runs: vLLM's pooling runner or Infinity's v2 server."""
    if "--runner" in argv and option(argv, "--runner") == "pooling":
        return "vllm"
    return "infinity" if "v2" in argv and "--model-id" in argv else "unknown"


@pytest.mark.parametrize(("name", "port", "model"), POOLING)
@pytest.mark.parametrize("engine", ENGINES)
def test_pooling_engine_auto_is_vllm_with_a_gpu_and_infinity_without(units, name, port, model, engine):
    on_gpu = exec_start(units / f"{name}-{engine}-gpu.service")
    on_cpu = exec_start(units / f"{name}-{engine}-cpu.service")
    assert (served_by(on_gpu), served_by(on_cpu)) == ("vllm", "infinity")
    assert "docker.io/vllm/vllm-openai:v0.12.0" in on_gpu
    assert "docker.io/michaelf34/infinity:0.0.77-cpu" in on_cpu
    for argv in (on_gpu, on_cpu):
        assert option(argv, "--name") == f"llm-{name}"
        assert option(argv, "--port") == port
        assert model in argv


@pytest.mark.parametrize("gpu", ["gpu", "cpu"])
def test_a_chosen_pooling_engine_runs_whatever_the_gpu(units, gpu):
    assert served_by(exec_start(units / f"embedding-podman-{gpu}-vllm.service")) == "vllm"
    infinity = exec_start(units / f"embedding-podman-{gpu}-infinity.service")
    assert served_by(infinity) == "infinity"
    server_args = infinity[infinity.index("v2") :]  # podman has a --device of its own
    assert option(server_args, "--device") == ("cuda" if gpu == "gpu" else "cpu")
    assert ("docker.io/michaelf34/infinity:0.0.77" in infinity) == (gpu == "gpu")


def test_infinity_serves_under_v1_offline_and_reports_nothing(units):
    argv = exec_start(units / "reranker-podman-cpu.service")
    # The readiness probe and the gateway ask /v1/embeddings and /v1/rerank, as of vLLM.
    assert option(argv, "--url-prefix") == "/v1"
    assert option(argv, "--served-model-name") == "BAAI/bge-reranker-v2-m3"
    env = {value for flag, value in itertools.pairwise(argv) if flag == "--env"}
    assert {"HF_HUB_OFFLINE=1", "DO_NOT_TRACK=1", "INFINITY_ANONYMOUS_USAGE_STATS=0"} <= env
    # Its own cache goes to the container's /tmp: the models' mount is read-only.
    assert "INFINITY_HOME=/tmp" in env
    assert "/var/lib/switchyard/huggingface:/var/cache/huggingface:ro" in argv
    assert "HF_HOME=/var/cache/huggingface" in env


@pytest.mark.parametrize("engine", ENGINES)
def test_rendered_units_pass_systemd_analyze_verify(units, engine):
    files = sorted(str(path) for path in units.glob(f"*-{engine}-*.service"))
    # Backends x GPU (6), the pooling services' variants (12), the services on GPUs of their own
    # (3); with Podman, vLLM's priority one.
    assert len(files) == 21 + (engine == "podman")
    env = dict(os.environ)
    # The readiness probe is installed by the role before it verifies; not on this machine.
    tolerated = f"Command {PROBE} is not executable"
    if engine == "docker":
        # docker.io is not installed here: a stand-in docker.service lets verify resolve
        # Requires=docker.service, and the one error it may still give is that
        # /usr/bin/docker is missing.
        stub = units / "stub-unit-path"
        stub.mkdir(exist_ok=True)
        (stub / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
        env["SYSTEMD_UNIT_PATH"] = f"{stub}:"
        if not Path("/usr/bin/docker").exists():
            tolerated += "|Command /usr/bin/docker is not executable"
    done = subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True, check=False, env=env)
    errors = [line for line in done.stderr.splitlines() if line.strip() and not re.search(tolerated, line)]
    assert errors == []
