"""Derived values the roles share, each too long for one line of Jinja.

Loaded through ansible.cfg's `filter_plugins`; tests/test_filters.py tests each one.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import ipaddress
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_NAMESPACE = "library"
# Characters that end a line or a directive in a systemd unit or an environment file, and
# the ones other readers take for a line's end (Python's str.splitlines: NEL, the Unicode
# line and paragraph separators), with the rest of the C1 controls.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
WILDCARD_ADDRESSES = {"0.0.0.0", "::"}


def ollama_manifest(name: str) -> str:
    """Where `ollama pull NAME` leaves its manifest in the store, as Ollama parses
    [host/][namespace/]model[:tag] (registry.ollama.ai, library and latest when left out)."""
    tag = "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) < 2:
        parts.insert(0, OLLAMA_NAMESPACE)
    if len(parts) < 3:
        parts.insert(0, OLLAMA_REGISTRY)
    return "/".join(["models", "manifests", *parts, tag])


def hf_cache_name(repo: str) -> str:
    """The directory a Hugging Face repo takes in a cache's hub/: models--ORG--NAME."""
    return "models--" + repo.replace("/", "--")


def hf_snapshots(model: str, cache_dir: str) -> str:
    """Where a model's files lie on the host: an absolute path as it is, a repo id in the
    Hugging Face cache at cache_dir."""
    if model.startswith("/"):
        return model
    return f"{cache_dir.rstrip('/')}/hub/{hf_cache_name(model)}/snapshots"


def hf_cached(repos: Iterable[Mapping[str, Any]], hub_dir: str) -> list[Mapping[str, Any]]:
    """The repos (mappings with a `repo` id) that a Hugging Face cache's hub/ at hub_dir, on
    the control node, already holds; none when hub_dir is empty."""
    if not hub_dir:
        return []
    hub = Path(hub_dir)
    return [repo for repo in repos if (hub / hf_cache_name(repo["repo"])).is_dir()]


def hf_copies_needed(
    repos: Iterable[Mapping[str, Any]], source_hub: str, host_hub: str, held: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The repos whose Hugging Face cache entry under source_hub, on the control node, the
    host does not hold as the models role's copy leaves it under host_hub. `held` is what
    ansible.builtin.find (recursive, any file type, hidden ones too) found under host_hub.
    An entry is held when every directory, link and file of it is there and nothing else
    is, each file of the same size, root's and of mode 0644.

    Sizes, not checksums, as rsync's quick check: a cache entry never changes in place (a new
    revision is a new snapshot, its files new blobs named by their hash), and a checksum of
    every file on both sides, which the copy module takes, reads a 16 GB model twice a run."""
    host_shapes = {item["path"].removeprefix(host_hub.rstrip("/") + "/"): _held_shape(item) for item in held}
    needed = []
    for repo in repos:
        entry = hf_cache_name(repo["repo"])
        held_here = {path: shape for path, shape in host_shapes.items() if path.startswith(entry + "/")}
        if _entry_shapes(Path(source_hub), entry) != held_here:
            needed.append(repo)
    return needed


def _entry_shapes(hub: Path, entry: str) -> dict[str, tuple]:
    """What is under a cache entry on the control node, as paths relative to the hub, with
    the shape the copy gives each on the host (links stay links)."""
    shapes: dict[str, tuple] = {}
    for path in (hub / entry).rglob("*"):
        relative = path.relative_to(hub).as_posix()
        if path.is_symlink():
            shapes[relative] = ("link",)
        elif path.is_dir():
            shapes[relative] = ("directory",)
        else:
            shapes[relative] = ("file", "0644", (0, 0), path.stat().st_size)
    return shapes


def _held_shape(item: Mapping[str, Any]) -> tuple:
    if item.get("islnk"):
        return ("link",)
    if item.get("isdir"):
        return ("directory",)
    return ("file", item.get("mode"), (item.get("uid"), item.get("gid")), item.get("size"))


def archives_to_ship(
    archives: Iterable[Mapping[str, Any]], held: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The archives (mappings with `path`: the files, directories and glob patterns on the
    control node that community.general.archive packs, and `dest`: where the host unpacks it)
    that the host lacks a file of, or holds another version of. `held` is what
    ansible.builtin.find (recursive, with SHA-256 checksums) found under the dests. A file the
    host holds besides them is left alone, as the unpack leaves it. An archive of no file is
    stale too: packing it fails, naming its paths."""
    checksums = {item["path"]: item.get("checksum") for item in held}
    stale = []
    for archive in archives:
        dest = str(archive["dest"]).rstrip("/")
        wanted = archive_files([archive["path"]] if isinstance(archive["path"], str) else archive["path"])
        if not wanted or any(checksums.get(f"{dest}/{name}") != checksum for name, checksum in wanted.items()):
            stale.append(archive)
    return stale


def archive_files(patterns: Iterable[str]) -> dict[str, str]:
    """{name in the archive: SHA-256} of every file an archive of these patterns holds, named
    as community.general.archive names them (relative to the common parent of the expanded
    paths), Python's byte-code caches left out, as the gateway role's archives leave them."""
    paths = sorted(
        {path for pattern in patterns for path in (glob.glob(pattern) if glob.has_magic(pattern) else [pattern])}
    )
    root = Path(os.path.commonpath([os.path.dirname(path) for path in paths])) if paths else Path()
    files = {}
    for path in map(Path, paths):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and "__pycache__" not in file.relative_to(root).parts:
                files[file.relative_to(root).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return files


def settings_options(options: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """A role's argument spec options without its parameters (required: what a play passes
    the role, such as the gateway's gateway_upstream): the settings, which have defaults."""
    return {name: option for name, option in options.items() if not option.get("required")}


def probe_host(address: str) -> str:
    """The host part of a URL that reaches a service listening on address from the host
    itself: loopback for a wildcard address, brackets around IPv6."""
    if address in WILDCARD_ADDRESSES:
        return "[::1]" if address == "::" else "127.0.0.1"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    return f"[{parsed}]" if parsed.version == 6 else str(parsed)


def is_ip_address(address: Any) -> bool:
    """An IPv4 or IPv6 address a unit can listen on: without an IPv6 zone (fe80::1%eth0),
    which systemd's ListenStream= and the servers' --host do not take."""
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        return False
    return not (isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id)


# Directories of the system itself: a role that took one of them for its own would change its
# owner and mode (/tmp's 1777 to 0755) or mount it into a root container.
SYSTEM_DIRECTORIES = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/cache", "/var/lib",
    "/var/log", "/var/tmp",
})  # fmt: skip
# Trees no service's files belong in.
SYSTEM_TREES = ("/boot/", "/dev/", "/etc/", "/proc/", "/sys/")


def is_system_directory(path: Any) -> bool:
    """Whether `path` is one of the system's own directories or lies in one of its trees."""
    normal = "/" + str(path).strip("/")
    return normal in SYSTEM_DIRECTORIES or (normal + "/").startswith(SYSTEM_TREES)


def is_loopback(address: Any) -> bool:
    """Whether only this host can reach an address (127.0.0.0/8, ::1); not an address: False."""
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return False


def is_private_address(address: Any) -> bool:
    """Whether an IP address is one of a private network or this host (RFC 1918, loopback,
    link-local, fc00::/7); not an address: False."""
    try:
        return ipaddress.ip_address(str(address)).is_private
    except ValueError:
        return False


def _systemd_word(item: Any) -> str:
    word = str(item)
    # systemd reads C escapes inside single quotes too (\s is a space there): a word that
    # needs quoting goes in double quotes, its backslashes and double quotes escaped.
    quoted = word if shlex.quote(word) == word else '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted.replace("%", "%%").replace("$", "$$")


def systemd_argv(argv: Iterable[Any]) -> str:
    """Words for an Exec= line: quoted for systemd, specifiers and variables escaped, one
    continuation line per option ("--flag value" stays together)."""
    out = []
    previous = None
    for item in argv:
        word = _systemd_word(item)
        if previous is None or word.startswith("-") or not str(previous).startswith("-"):
            out.append(" \\\n    " + word)
        else:
            out.append(" " + word)
        previous = item
    return "".join(out)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


# What a value must be, by its argument spec's type, beyond what validate_argument_spec
# checks: it converts a list given for a string into the list's text (['sk-…'] became a key)
# and a string given for a list into its comma-separated parts, and the roles then read the
# value as given, not as converted. Numbers and booleans may come as text (-e NAME=VALUE).
_SHAPES: dict[str, tuple[type, ...]] = {"str": (str, int, float), "path": (str,), "list": (list,), "dict": (Mapping,)}
# In this order: a bool is an int too, and Ansible hands its own subclasses of list and dict.
_SHAPE_NAMES = (
    (bool, "a boolean"),
    (list, "a list"),
    (Mapping, "a mapping"),
    (str, "a string"),
    ((int, float), "a number"),
)


def mistyped_settings(settings: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """For each setting whose value has the wrong shape for its type: what it is and what to
    give instead."""
    wrong = []
    for name, spec in specs.items():
        value, kind = settings.get(name), spec.get("type", "str")
        allowed = _SHAPES.get(kind)
        if value is None or allowed is None or (isinstance(value, allowed) and not isinstance(value, bool)):
            continue
        given = next((shape for kind_of, shape in _SHAPE_NAMES if isinstance(value, kind_of)), type(value).__name__)
        wanted = {"str": "one string", "path": "a path", "list": "a list", "dict": "a mapping"}[kind]
        wrong.append(f"{name} is {given}: give {wanted}")
    return wrong


def with_control_characters(settings: Mapping[str, Any]) -> list[str]:
    """The names of the settings whose value (or any string inside it) holds a newline or
    another control character: such a value would add lines to a unit or an env file."""
    return sorted(
        name for name, value in settings.items() if any(CONTROL_CHARACTERS.search(s) for s in _strings(value))
    )


def url_without_credentials(url: str) -> str:
    """The URL without the user and password a mirror's URL may carry, for what other users
    or the run's output may read (apt's sources, error messages); the credentials go where
    only root reads them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_credentials(url: str) -> dict[str, str]:
    """The user and password in a URL, decoded ({} when it has none)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return {}
    return {"login": unquote(parts.username or ""), "password": unquote(parts.password or "")}


def apt_auth_entry(url: str) -> str:
    """The line of /etc/apt/auth.conf.d/ (apt_auth.conf(5)) that gives apt the credentials of
    a repository URL, so that its sources can name it without them ("" when it has none)."""
    credentials = url_credentials(url)
    if not credentials:
        return ""
    parts = urlsplit(url_without_credentials(url))
    # With its scheme: without one, apt gives the credentials to https only.
    machine = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return f"machine {machine} login {credentials['login']} password {credentials['password']}"


def pip_index_config(index_url: str) -> str:
    """A virtualenv's pip.conf naming the package index (one without settings when "")."""
    if not index_url:
        return "# No package index set: pip asks PyPI, or the wheelhouse its environment names.\n"
    return f"[global]\nindex-url = {index_url}\n"


def gpu_flags(engine: str, devices: Sequence[str]) -> list[str]:
    """The container engine's options that give a container these GPUs ([all]: every one).
    Podman takes CDI device names (nvidia.com/gpu=0, =GPU-…, =all), one --device each;
    Docker one --gpus, whose CSV syntax wants a list of devices in double quotes."""
    if engine == "docker":
        return ["--gpus", "all" if list(devices) == ["all"] else '"device=' + ",".join(devices) + '"']
    return [word for device in devices for word in ("--device", f"nvidia.com/gpu={device}")]


def gpu_ids(listing: str) -> list[str]:
    """Every name `nvidia-smi -L` gives the host's GPUs and MIG devices: the GPU's index and
    UUID, a MIG device's GPU:index and UUID (the names CDI specs and Docker take)."""
    ids: list[str] = []
    gpu = ""
    for line in listing.splitlines():
        if found := re.match(r"GPU (\d+): .*\(UUID: (GPU-[^)]+)\)", line):
            gpu = found.group(1)
            ids += found.groups()
        elif found := re.match(r"\s+MIG .*Device\s+(\d+): \(UUID: (MIG-[^)]+)\)", line):
            ids += [f"{gpu}:{found.group(1)}", found.group(2)]
    return ids


def gpu_share_problems(shares: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The GPUs asked for more than all their memory. `shares`: a setting (llm_vllm_gpu_mem_util)
    -> {"share": its value, "devices": the service's GPUs}; a service on [all] is on every GPU
    the others name, and all of them on one GPU when none is named."""
    named = sorted({device for share in shares.values() for device in share["devices"] if device != "all"})
    problems = []
    for gpu in named or ["all"]:
        on_it = {name: float(share["share"]) for name, share in shares.items() if {"all", gpu} & set(share["devices"])}
        if sum(on_it.values()) > 1:
            asked = ", ".join(f"{name} = {value:g}" for name, value in on_it.items())
            problems.append(f"{'the GPU' if gpu == 'all' else 'GPU ' + gpu}: {asked}")
    return problems


def nvidia_cuda_distro(facts: Mapping[str, Any]) -> str:
    """The distribution's directory in NVIDIA's CUDA repository: ubuntu2404, debian12, ..."""
    distribution = str(facts["distribution"]).lower()
    if distribution == "ubuntu":
        return distribution + str(facts["distribution_version"]).replace(".", "")
    return distribution + str(facts["distribution_major_version"])


def gateway_keys(api_key: str, api_keys: Iterable[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The keys a gateway accepts, in the order the settings give them: gateway_api_key (the
    original's API_KEY) when set, then gateway_api_keys, whose items are a key or a mapping
    with `key` and any of name, max_in_flight and priority; each as such a mapping."""
    given = ([api_key] if api_key else []) + list(api_keys)
    return [dict(item) if isinstance(item, Mapping) else {"key": item} for item in given]


# What the gateway's key file reader (switchyard_gateway/keys.py) accepts.
GATEWAY_KEY = re.compile(r"^[\x21\x22\x24-\x7e][\x21-\x7e]{15,}$")
GATEWAY_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
GATEWAY_KEY_FIELDS = ("key", "name", "max_in_flight", "priority")


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**9


def gateway_key_problems(keys: Iterable[Mapping[str, Any]]) -> list[str]:
    """What is wrong with each key of gateway_keys(), by its number: never the key itself."""
    problems: list[str] = []
    names: dict[str, int] = {}
    for number, entry in enumerate(keys, start=1):
        unknown = sorted(set(entry) - set(GATEWAY_KEY_FIELDS))
        if unknown:
            problems.append(f"key number {number} has {', '.join(unknown)}: use {', '.join(GATEWAY_KEY_FIELDS)}")
        if not (isinstance(entry.get("key"), str) and GATEWAY_KEY.match(entry["key"])):
            problems.append(
                f"key number {number} is not valid: a key is at least 16 printable ASCII characters, "
                "without spaces, and does not start with '#'"
            )
        name = entry.get("name", f"key-{number}")
        if not (isinstance(name, str) and GATEWAY_KEY_NAME.match(name)):
            problems.append(f"key number {number}: name {name!r} is not letters, digits, '.', '_' or '-' (up to 64)")
        elif name in names:
            problems.append(f"keys number {names[name]} and {number} have the same name {name}")
        else:
            names[name] = number
        limit = entry.get("max_in_flight", 0)
        if not (_whole_number(limit) and limit >= 0):
            problems.append(f"key number {number}: max_in_flight {limit!r} is not a whole number, 0 (no limit) or more")
        if "priority" in entry and not _whole_number(entry["priority"]):
            problems.append(f"key number {number}: priority {entry['priority']!r} is not a whole number")
    return problems


def gateway_key_line(entry: Mapping[str, Any]) -> str:
    """The key's line in the gateway's key file: the key, then what is known of it."""
    fields = [f"{name}={entry[name]}" for name in GATEWAY_KEY_FIELDS[1:] if entry.get(name) not in (None, "")]
    return " ".join([entry["key"], *fields])


BACKEND_CONTAINER = re.compile(r"^llm-(vllm|ollama|llamacpp)$")


def fleet_status_row(
    containers: Iterable[str], models: Mapping[str, Any], gpu: Mapping[str, Any], last_good: Mapping[str, Any]
) -> dict[str, str]:
    """One host's line of playbooks/status.yml, from what the host answered: `<engine> ps`
    lines ("name image"), the backend's /v1/models, nvidia-smi's CSV and the stat of the last
    healthy backend unit (written when the backend last came up)."""
    running = dict(line.split(" ", 1) for line in containers if " " in line)
    backends = [name for name in running if BACKEND_CONTAINER.match(name)]
    served = (models.get("json") or {}).get("data", []) if models.get("status") == 200 else []
    stat = last_good.get("stat", {})
    since = (
        datetime.datetime.fromtimestamp(stat["mtime"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if stat.get("exists")
        else "never"
    )
    return {
        "backend": backends[0].removeprefix("llm-") if backends else "none",
        "image": running[backends[0]] if backends else "none",
        "model": ", ".join(str(entry.get("id")) for entry in served) or "none",
        "health": "serving" if served and backends else "down",
        "gpu": "; ".join(gpu.get("stdout_lines", [])) if gpu.get("rc") == 0 else "none",
        "since": since,
    }


def router_view(hosts: Iterable[str], shown: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """What one router says of each host, from `router-ctl show` of each (in `hosts` order):
    serving, drained, maintenance, down, or `not listed` (not in its configuration)."""
    view = {}
    for host, result in zip(hosts, shown, strict=True):
        if result.get("rc") != 0:
            view[host] = "not listed"
            continue
        state = json.loads(result["stdout"])
        view[host] = next(
            (word for word in ("maintenance", "drained") if state[word]), "serving" if state["up"] else "down"
        )
    return view


def router_views(routers: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Router -> the view it noted (router_view), None for one that noted none: unreachable,
    or left out of the run (--limit). A Jinja attribute lookup on hostvars fails instead."""
    return {router: hostvars[router].get("router_view") for router in routers}


def router_column(views: Mapping[str, Any], host: str) -> str:
    """A host's cell in the fleet's status: what its routers say of it ('?' from one that did
    not answer), each named when there are several; `no router` outside a fleet."""
    if not views:
        return "no router"
    words = {router: (view or {}).get(host, "?") for router, view in views.items()}
    if len(words) == 1:
        return next(iter(words.values()))
    return ", ".join(f"{router}: {word}" for router, word in words.items())


def vrrp_group(
    routers: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]], virtual_address: str
) -> dict[str, str]:
    """The routers that share `virtual_address` (router_virtual_address), each with the address
    the others send it VRRP on: its router_vrrp_address, else its ansible_host, else its name.
    Read from the inventory, so a router left out of the run (--limit) stays a peer."""
    group = {}
    for router in routers:
        settings = hostvars[router]
        if virtual_address and settings.get("router_virtual_address", "") == virtual_address:
            group[router] = settings.get("router_vrrp_address") or settings.get("ansible_host") or router
    return group


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ollama_manifest": ollama_manifest,
            "hf_cache_name": hf_cache_name,
            "hf_snapshots": hf_snapshots,
            "hf_cached": hf_cached,
            "hf_copies_needed": hf_copies_needed,
            "archives_to_ship": archives_to_ship,
            "probe_host": probe_host,
            "is_ip_address": is_ip_address,
            "is_loopback": is_loopback,
            "is_private_address": is_private_address,
            "is_system_directory": is_system_directory,
            "systemd_argv": systemd_argv,
            "with_control_characters": with_control_characters,
            "mistyped_settings": mistyped_settings,
            "settings_options": settings_options,
            "nvidia_cuda_distro": nvidia_cuda_distro,
            "url_without_credentials": url_without_credentials,
            "url_credentials": url_credentials,
            "apt_auth_entry": apt_auth_entry,
            "pip_index_config": pip_index_config,
            "gpu_flags": gpu_flags,
            "gpu_ids": gpu_ids,
            "gpu_share_problems": gpu_share_problems,
            "fleet_status_row": fleet_status_row,
            "router_view": router_view,
            "router_views": router_views,
            "vrrp_group": vrrp_group,
            "router_column": router_column,
            "gateway_keys": gateway_keys,
            "gateway_key_problems": gateway_key_problems,
            "gateway_key_line": gateway_key_line,
        }
