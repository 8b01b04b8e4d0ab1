"""The project's filter plugins (filter_plugins/switchyard.py), one behaviour per test."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from configparser import RawConfigParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filter_plugins"))

import switchyard


@pytest.mark.parametrize(
    ("name", "manifest"),
    [
        ("qwen3", "models/manifests/registry.ollama.ai/library/qwen3/latest"),
        ("qwen3:8b", "models/manifests/registry.ollama.ai/library/qwen3/8b"),
        ("me/model:q4", "models/manifests/registry.ollama.ai/me/model/q4"),
        ("hf.co/org/repo:Q4_K_M", "models/manifests/hf.co/org/repo/Q4_K_M"),
        ("host:5000/ns/model", "models/manifests/host:5000/ns/model/latest"),
    ],
)
def test_ollama_manifest_follows_ollamas_name_rules(name, manifest):
    assert switchyard.ollama_manifest(name) == manifest


def test_hf_cache_name_is_the_hubs_directory_name():
    assert switchyard.hf_cache_name("sentence-transformers/all-MiniLM-L6-v2") == (
        "models--sentence-transformers--all-MiniLM-L6-v2"
    )


def test_hf_cached_finds_the_repos_a_hub_directory_holds(tmp_path):
    (tmp_path / "models--BAAI--bge-m3").mkdir()
    (tmp_path / "models--org--a-file").write_text("")
    repos = [{"repo": "BAAI/bge-m3", "revision": "main"}, {"repo": "org/absent"}, {"repo": "org/a-file"}]
    assert switchyard.hf_cached(repos, str(tmp_path)) == [{"repo": "BAAI/bge-m3", "revision": "main"}]
    assert switchyard.hf_cached(repos, "") == []


def hf_entry(hub: Path, repo: str) -> Path:
    """A cache entry as huggingface-hub leaves it: blobs named by hash, snapshot files that
    link to them, refs."""
    entry = hub / switchyard.hf_cache_name(repo)
    (entry / "blobs").mkdir(parents=True)
    (entry / "blobs" / "9e1c").write_bytes(b"weights" * 100)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("abc123")
    snapshot = entry / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to("../../blobs/9e1c")
    return entry


def found_by_find(top: Path, owner: tuple[int, int] = (0, 0), mode: str = "0644") -> list[dict]:
    """What ansible.builtin.find (recursive, any type) reports of what is under top, as if
    the copy had left it: root's, files of the mode given."""
    found = []
    for path in top.rglob("*"):
        info = {"path": str(path), "islnk": path.is_symlink(), "isdir": path.is_dir() and not path.is_symlink()}
        if not info["islnk"] and not info["isdir"]:
            info |= {"mode": mode, "size": path.stat().st_size}
        found.append(info | {"uid": owner[0], "gid": owner[1]})
    return found


def test_hf_copies_needed_only_for_an_entry_the_host_does_not_hold_as_copied(tmp_path):
    source, host = tmp_path / "source", tmp_path / "host"
    hf_entry(source, "BAAI/bge-m3")
    hf_entry(source, "org/other")
    shutil.copytree(source, host, symlinks=True)
    repos = [{"repo": "BAAI/bge-m3"}, {"repo": "org/other"}]

    def needed(held: list[dict]) -> list[str]:
        return [repo["repo"] for repo in switchyard.hf_copies_needed(repos, str(source), f"{host}/", held)]

    entry = host / "models--BAAI--bge-m3"
    other = found_by_find(host / "models--org--other")
    assert needed(found_by_find(entry) + other) == []
    assert needed(other) == ["BAAI/bge-m3"], "an entry the host lacks"
    assert needed(found_by_find(entry, mode="0600") + other) == ["BAAI/bge-m3"], "a file of another mode"
    assert needed(found_by_find(entry, owner=(1000, 1000)) + other) == ["BAAI/bge-m3"], "not root's"
    (entry / "blobs" / "9e1c").write_bytes(b"cut")
    assert needed(found_by_find(entry) + other) == ["BAAI/bge-m3"], "a file of another size"
    shutil.rmtree(entry)
    shutil.copytree(source / "models--BAAI--bge-m3", entry, symlinks=False)
    assert needed(found_by_find(entry) + other) == ["BAAI/bge-m3"], "a link that is a file on the host"
    shutil.rmtree(entry)
    shutil.copytree(source / "models--BAAI--bge-m3", entry, symlinks=True)
    (entry / "blobs" / "0ld").write_text("an older revision's")
    assert needed(found_by_find(entry) + other) == ["BAAI/bge-m3"], "a file the control node lacks"


def held_by_find(top: Path) -> list[dict]:
    """What ansible.builtin.find (recursive, hidden files, SHA-256 checksums) reports of the
    files under top."""
    found = [path for path in top.rglob("*") if path.is_file()]
    return [{"path": str(path), "checksum": hashlib.sha256(path.read_bytes()).hexdigest()} for path in found]


def test_archives_to_ship_are_the_ones_the_host_lacks_a_file_of_or_holds_another_version_of(tmp_path):
    source, wheels, app, wheelhouse = (tmp_path / name for name in ("source", "wheels", "app", "wheelhouse"))
    (source / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "src" / "pkg" / "app.py").write_text("print('hi')\n")
    (source / "src" / "pkg" / ".hidden").write_text("kept\n")
    (source / "src" / "pkg" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"compiled")
    (source / "requirements.txt").write_text("httpx==1\n")
    wheels.mkdir()
    (wheels / "httpx-1-py3-none-any.whl").write_bytes(b"wheel")
    (wheels / "README").write_text("not a wheel")
    archives = [
        {"name": "code", "dest": str(app), "path": [str(source / "src" / "pkg"), str(source / "requirements.txt")]},
        {"name": "wheelhouse", "dest": f"{wheelhouse}/", "path": f"{wheels}/*.whl"},
    ]

    def stale() -> list[str]:
        held = held_by_find(app) + held_by_find(wheelhouse)
        return [archive["name"] for archive in switchyard.archives_to_ship(archives, held)]

    assert stale() == ["code", "wheelhouse"], "a fresh host"
    # As community.general.archive names the files, unpacked where the role unpacks them.
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("__pycache__"))
    wheelhouse.mkdir()
    shutil.copy(wheels / "httpx-1-py3-none-any.whl", wheelhouse)
    assert stale() == []
    (app / "src" / "pkg" / "__pycache__").mkdir()
    (app / "src" / "pkg" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"written by the service")
    (wheelhouse / "httpx-0-py3-none-any.whl").write_bytes(b"an older wheel")
    assert stale() == [], "byte-code caches and files besides the archive's"
    (app / "src" / "pkg" / "app.py").write_text("print('edited on the host')\n")
    assert stale() == ["code"], "a file of another content"
    (app / "src" / "pkg" / "app.py").write_text("print('hi')\n")
    (app / "src" / "pkg" / ".hidden").unlink()
    assert stale() == ["code"], "a file the host lacks"
    (wheels / "uvicorn-1-py3-none-any.whl").write_bytes(b"a new wheel")
    assert stale() == ["code", "wheelhouse"], "a file the control node adds"
    assert switchyard.archives_to_ship([{"name": "none", "dest": "/x", "path": f"{tmp_path}/*.none"}], []), (
        "an archive of nothing is packed, which fails naming its paths"
    )


def test_settings_options_leave_out_the_parameters_a_play_passes():
    options = {"gateway_port": {"type": "int"}, "gateway_upstream": {"type": "dict", "required": True}}
    assert switchyard.settings_options(options) == {"gateway_port": {"type": "int"}}


def test_hf_snapshots_of_a_repo_and_of_a_path():
    assert switchyard.hf_snapshots("BAAI/bge-m3", "/var/hf/") == "/var/hf/hub/models--BAAI--bge-m3/snapshots"
    assert switchyard.hf_snapshots("/srv/models/bge", "/var/hf") == "/srv/models/bge"


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("10.1.2.3", "10.1.2.3"),
        ("fd00::1", "[fd00::1]"),
        ("gpu-01.lan", "gpu-01.lan"),
    ],
)
def test_probe_host_reaches_the_address_from_the_host(address, host):
    assert switchyard.probe_host(address) == host


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("0.0.0.0", False), ("::", False),
     ("192.0.2.1", False), ("localhost", False)],
)  # fmt: skip
def test_is_loopback(address, loopback):
    assert switchyard.is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("address", "valid"), [("10.0.0.5", True), ("::", True), ("fe80::1", True), ("fe80::1%eth0", False), ("", False)]
)
def test_is_ip_address_takes_what_a_unit_can_listen_on(address, valid):
    assert switchyard.is_ip_address(address) is valid


def test_systemd_argv_keeps_each_option_with_its_value_on_one_line():
    rendered = switchyard.systemd_argv(["--model", "/m.gguf", "--jinja", "--port", 8000])
    assert rendered.splitlines() == [" \\", "    --model /m.gguf \\", "    --jinja \\", "    --port 8000"]


def test_systemd_argv_escapes_specifiers_and_variables():
    # How systemd itself reads each word back: molecule/default's test_backend.py.
    rendered = switchyard.systemd_argv(["--x", "100% of $HOME", "%n"])
    assert "%" not in rendered.replace("%%", "") and "$" not in rendered.replace("$$", "")


def test_control_characters_are_found_in_nested_values():
    settings = {"ok": "fine", "line": "a\nb", "args": ["--x", "y\rz"], "env": {"K": "v\x00"}, "n": 8000}
    assert switchyard.with_control_characters(settings) == ["args", "env", "line"]


def test_mistyped_settings_say_what_each_is_and_what_to_give():
    specs = {"name": {"type": "str"}, "args": {"type": "list"}, "map": {"type": "dict"}, "port": {"type": "int"},
             "dir": {"type": "path"}, "flag": {"type": "bool"}, "unset": {}}  # fmt: skip
    good = {"name": "qwen3", "args": ["--x"], "map": {}, "port": "8000", "dir": "/srv", "flag": "false", "unset": 8}
    assert switchyard.mistyped_settings(good, specs) == []
    bad = {"name": ["sk-1"], "args": "--x", "map": ["a"], "port": 8000, "dir": True, "flag": "yes", "unset": [1]}
    assert switchyard.mistyped_settings(bad, specs) == [
        "name is a list: give one string",
        "args is a string: give a list",
        "map is a list: give a mapping",
        "dir is a boolean: give a path",
        "unset is a list: give one string",
    ]


@pytest.mark.parametrize(
    ("path", "system"),
    [("/tmp", True), ("/", True), ("//var/lib/", True), ("/etc/ssl", True), ("/proc/1", True), ("/usr/local", True),
     ("/var/lib/switchyard", False), ("/opt/switchyard/models-venv", False), ("/srv/models", False),
     ("/etcetera", False)],
)  # fmt: skip
def test_system_directories_are_told_apart_from_the_services_own(path, system):
    assert switchyard.is_system_directory(path) is system


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x1c"])
def test_what_python_takes_for_a_line_end_is_refused_too(separator):
    """The gateway would read a second setting where systemd reads one value."""
    assert switchyard.with_control_characters({"name": f"qwen3-8b{separator}X=1", "ok": "caf\u00e9"}) == ["name"]


@pytest.mark.parametrize(
    ("facts", "distro"),
    [
        ({"distribution": "Ubuntu", "distribution_version": "24.04", "distribution_major_version": "24"}, "ubuntu2404"),
        ({"distribution": "Debian", "distribution_version": "12.7", "distribution_major_version": "12"}, "debian12"),
    ],
)
def test_nvidia_cuda_distro(facts, distro):
    assert switchyard.nvidia_cuda_distro(facts) == distro


def test_fleet_status_row_reads_the_backend_beside_the_pooling_services():
    row = switchyard.fleet_status_row(
        ["llm-embedding localhost/vllm:cpu", "llm-ollama localhost/ollama:latest", "llm-gateway-x busybox"],
        {"status": 200, "json": {"data": [{"id": "tiny:latest"}]}},
        {"rc": 0, "stdout_lines": ["NVIDIA L4, 570.86.15, 10 MiB, 23034 MiB"]},
        {"stat": {"exists": True, "mtime": 1796000000.0}},
    )
    assert row == {
        "backend": "ollama",
        "image": "localhost/ollama:latest",
        "model": "tiny:latest",
        "health": "serving",
        "gpu": "NVIDIA L4, 570.86.15, 10 MiB, 23034 MiB",
        "since": "2026-11-30 00:53:20 UTC",
    }


def test_fleet_status_row_of_a_host_whose_backend_does_not_answer():
    row = switchyard.fleet_status_row(
        ["llm-llamacpp localhost/llama.cpp:server"],
        {"status": -1, "msg": "Connection refused"},
        {"rc": 2, "stdout_lines": []},
        {"stat": {"exists": False}},
    )
    assert (row["backend"], row["model"], row["health"], row["gpu"], row["since"]) == (
        "llamacpp",
        "none",
        "down",
        "none",
        "never",
    )


def test_gateway_keys_put_the_originals_api_key_first_and_skip_it_when_unset():
    assert switchyard.gateway_keys("k1", ["k2", {"key": "k3", "name": "batch"}]) == [
        {"key": "k1"},
        {"key": "k2"},
        {"key": "k3", "name": "batch"},
    ]
    assert switchyard.gateway_keys("", ["k2"]) == [{"key": "k2"}]
    assert switchyard.gateway_keys("", []) == []


GOOD_KEY = "sk-" + "a" * 20


def test_a_key_line_is_the_key_then_what_is_known_of_it():
    assert switchyard.gateway_key_line({"key": GOOD_KEY}) == GOOD_KEY
    entry = {"key": GOOD_KEY, "priority": -3, "name": "batch", "max_in_flight": 4}
    assert switchyard.gateway_key_line(entry) == f"{GOOD_KEY} name=batch max_in_flight=4 priority=-3"


def test_gateway_key_problems_name_the_key_by_its_number_only():
    secret = "sk-secret-with-a-name"
    keys = [
        {"key": GOOD_KEY, "name": "key-2"},
        {"key": "short"},
        {"key": secret, "name": "two words", "max_in_flight": True, "priority": 1.5, "colour": "blue"},
    ]
    assert switchyard.gateway_key_problems(keys) == [
        "key number 2 is not valid: a key is at least 16 printable ASCII characters, without spaces, "
        "and does not start with '#'",
        "keys number 1 and 2 have the same name key-2",
        "key number 3 has colour: use key, name, max_in_flight, priority",
        "key number 3: name 'two words' is not letters, digits, '.', '_' or '-' (up to 64)",
        "key number 3: max_in_flight True is not a whole number, 0 (no limit) or more",
        "key number 3: priority 1.5 is not a whole number",
    ]
    assert switchyard.gateway_key_problems([{"key": GOOD_KEY, "name": "batch", "max_in_flight": 2}]) == []


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("https://user:s3cr%40t@mirror.example:8443/pypi/simple/", "https://mirror.example:8443/pypi/simple/"),
        ("https://token@hf-mirror.example", "https://hf-mirror.example"),
        ("http://user:@[fd00::1]:8765/cuda/", "http://[fd00::1]:8765/cuda/"),
        ("https://mirror.example/simple/?q=a@b", "https://mirror.example/simple/?q=a@b"),
        ("https://mirror.example/simple/", "https://mirror.example/simple/"),
    ],
)
def test_url_without_credentials_keeps_all_but_the_user_and_password(url, bare):
    assert switchyard.url_without_credentials(url) == bare


def test_url_credentials_are_decoded():
    credentials = switchyard.url_credentials("https://us%3Aer:s3cr%40t@mirror.example/")
    assert credentials == {"login": "us:er", "password": "s3cr@t"}
    assert switchyard.url_credentials("https://mirror.example/") == {}


def test_apt_auth_entry_names_the_repository_with_its_scheme_without_its_credentials():
    entry = switchyard.apt_auth_entry("https://user:s3cr%40t@mirror.example:8443/cuda/repos/")
    assert entry == "machine https://mirror.example:8443/cuda/repos/ login user password s3cr@t"
    assert switchyard.apt_auth_entry("https://mirror.example/cuda/") == ""


def test_pip_index_config_is_read_as_pip_reads_its_files(tmp_path):
    """pip reads its configuration files with RawConfigParser: a %-encoded password stays as is."""
    config = tmp_path / "pip.conf"
    for index_url in ("https://user:p%40ss@mirror.example/simple/", ""):
        config.write_text(switchyard.pip_index_config(index_url))
        parser = RawConfigParser()
        parser.read(config)
        read = {f"{section}.{key}": value for section in parser.sections() for key, value in parser.items(section)}
        assert read == ({"global.index-url": index_url} if index_url else {})


def test_gpu_flags_name_each_gpu_as_its_engine_takes_it():
    assert switchyard.gpu_flags("podman", ["all"]) == ["--device", "nvidia.com/gpu=all"]
    assert switchyard.gpu_flags("podman", ["0", "GPU-1a"]) == [
        "--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=GPU-1a",
    ]  # fmt: skip
    assert switchyard.gpu_flags("docker", ["all"]) == ["--gpus", "all"]
    assert switchyard.gpu_flags("docker", ["0", "2"]) == ["--gpus", '"device=0,2"']


# As nvidia-smi -L prints a host with a whole GPU and one split into MIG devices.
NVIDIA_SMI_L = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5a3c4d1e-0f6b-7c8d-9e0f-1a2b3c4d5e6f)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0)
  MIG 3g.20gb     Device  0: (UUID: MIG-11111111-2222-3333-4444-555555555555)
  MIG 3g.20gb     Device  1: (UUID: MIG-66666666-7777-8888-9999-000000000000)
"""


def test_gpu_ids_are_the_indices_and_uuids_nvidia_smi_lists():
    assert switchyard.gpu_ids(NVIDIA_SMI_L) == [
        "0", "GPU-5a3c4d1e-0f6b-7c8d-9e0f-1a2b3c4d5e6f",
        "1", "GPU-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        "1:0", "MIG-11111111-2222-3333-4444-555555555555",
        "1:1", "MIG-66666666-7777-8888-9999-000000000000",
    ]  # fmt: skip
    assert switchyard.gpu_ids("") == []


def test_gpu_shares_add_up_per_gpu():
    def share(value: float, *devices: str) -> dict:
        return {"share": value, "devices": list(devices)}

    one_gpu = {"llm_vllm_gpu_mem_util": share(0.65, "all"), "llm_embedding_gpu_mem_util": share(0.4, "all")}
    assert switchyard.gpu_share_problems(one_gpu) == [
        "the GPU: llm_vllm_gpu_mem_util = 0.65, llm_embedding_gpu_mem_util = 0.4"
    ]
    apart = {"llm_vllm_gpu_mem_util": share(0.9, "0"), "llm_embedding_gpu_mem_util": share(0.9, "1")}
    assert switchyard.gpu_share_problems(apart) == []
    shared = apart | {"llm_reranker_gpu_mem_util": share(0.2, "all")}
    assert switchyard.gpu_share_problems(shared) == [
        "GPU 0: llm_vllm_gpu_mem_util = 0.9, llm_reranker_gpu_mem_util = 0.2",
        "GPU 1: llm_embedding_gpu_mem_util = 0.9, llm_reranker_gpu_mem_util = 0.2",
    ]


def shown(up: bool, drained: bool = False, maintenance: bool = False) -> dict:
    """One `router-ctl show` task result."""
    state = {"up": up, "drained": drained, "maintenance": maintenance, "serving": up and not (drained or maintenance)}
    return {"rc": 0, "stdout": json.dumps(state | {"sessions": 0, "others_serving": 1, "changed": False})}


def test_router_view_names_each_hosts_state():
    hosts = ["a", "b", "c", "d", "e"]
    results = [shown(True), shown(True, drained=True), shown(False, maintenance=True), shown(False), {"rc": 1}]
    assert switchyard.router_view(hosts, results) == {
        "a": "serving",
        "b": "drained",
        "c": "maintenance",
        "d": "down",
        "e": "not listed",
    }


def test_router_views_has_none_for_a_router_that_noted_no_view():
    """A router unreachable, or left out of the run, has no router_view among its variables."""
    hostvars = {"r1": {"router_view": {"a": "serving"}, "ansible_host": "10.0.0.1"}, "r2": {"ansible_host": "10.0.0.2"}}
    assert switchyard.router_views(["r1", "r2"], hostvars) == {"r1": {"a": "serving"}, "r2": None}


def test_vrrp_group_takes_the_routers_of_one_virtual_address_at_their_vrrp_addresses():
    """router_vrrp_address, else ansible_host, else the name; routers of another address or of
    none are not peers, and no address makes no group."""
    vip = "10.0.0.100/24"
    hostvars = {
        "r1": {"router_virtual_address": vip, "router_vrrp_address": "10.0.1.1", "ansible_host": "r1.example"},
        "r2": {"router_virtual_address": vip, "ansible_host": "10.0.0.2", "router_vrrp_address": ""},
        "10.0.0.3": {"router_virtual_address": vip},
        "r4": {"router_virtual_address": "10.0.0.200/24", "ansible_host": "10.0.0.4"},
        "r5": {"ansible_host": "10.0.0.5"},
    }
    routers = list(hostvars)
    assert switchyard.vrrp_group(routers, hostvars, vip) == {"r1": "10.0.1.1", "r2": "10.0.0.2", "10.0.0.3": "10.0.0.3"}
    assert switchyard.vrrp_group(routers, hostvars, "") == {}


def test_router_column_names_the_routers_only_when_there_are_several():
    assert switchyard.router_column({}, "a") == "no router"
    assert switchyard.router_column({"r1": {"a": "drained"}}, "a") == "drained"
    assert switchyard.router_column({"r1": {"a": "serving"}, "r2": None}, "a") == "r1: serving, r2: ?"


@pytest.mark.parametrize(
    ("address", "private"),
    [("10.1.2.3", True), ("192.168.0.9", True), ("127.0.0.1", True), ("fd00::5", True), ("8.8.4.4", False),
     ("2001:4860::8888", False), ("gpu-01.example.internal", False)],
)  # fmt: skip
def test_is_private_address(address, private):
    assert switchyard.is_private_address(address) is private
