"""Every setting of the gateway, read from the environment in this one place.

The systemd unit sets them from the inventory (roles/gateway); each one is named
SWITCHYARD_GATEWAY_<FIELD>. API keys never travel in the environment: they are read from the
file SWITCHYARD_GATEWAY_API_KEYS_FILE names (root and the service's user only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .keys import ApiKey, KeyFileError, read_key_file

PREFIX = "SWITCHYARD_GATEWAY_"
# How a backend turns Qwen3's thinking off: its chat template's enable_thinking, or
# reasoning_effort "none" (Ollama's OpenAI endpoint).
THINKING_SWITCHES = ("chat_template_kwargs", "reasoning_effort")
# What serves embeddings and rerank (pooling.py adapts what Infinity lacks).
POOLING_ENGINES = ("vllm", "infinity")
# Workers beyond a few add memory (an app and an upstream pool each) and little throughput:
# one core of Python relays thousands of requests or tens of thousands of chunks a second.
AUTO_WORKERS_CAP = 8


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and what to change."""


@dataclass(frozen=True)
class Settings:
    backend: str
    model: str
    backend_model: str
    model_aliases: tuple[str, ...] = ()
    backend_url: str = "http://127.0.0.1:8000"
    # Where the backend tells its version, and in which JSON field (/config shows it).
    backend_version_path: str = "/version"
    backend_version_field: str = "version"
    thinking_switch: str = "chat_template_kwargs"
    embedding_url: str = "http://127.0.0.1:8001"
    embedding_model: str = ""
    reranker_url: str = "http://127.0.0.1:8002"
    reranker_model: str = ""
    pooling_engine: str = "vllm"
    # The GPU conformance check's status file (roles/nvidia), shown in /health/deep; "" on
    # hosts without a GPU.
    gpu_status_file: str = ""
    auth: bool = True
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)
    # Whether /health/deep, /metrics and /config need a key (/health never does).
    status_requires_key: bool = True
    max_body_bytes: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    health_timeout: float = 2.0
    # /health/ready and /health/deep say the backend is stalled (503: a router takes the host out)
    # when a generation request has waited this long for its answer and the backend has sent
    # nothing at all for as long: an engine that hangs but still lists its model.
    stall_timeout_s: float = 120.0
    retry_after: int = 5
    max_connections: int = 512
    # The settings a switch changes (backend, model names, upstreams) come from this env
    # file too; SIGHUP reads it again, with the key file, instead of a restart (reload.py).
    reload_file: str = ""
    # The backend's unit writes this file each time it starts serving (the llm role's
    # announce): what serves on the backend's port, read over the reload file (reload.py),
    # so that the gateway follows whatever started there, whoever started it.
    backend_file: str = ""
    # While this file exists (and for its hold_s at most), generation requests wait up to
    # switch_hold_s instead of failing: the llm role leaves it for the time of a backend
    # restart (hold.py).
    switch_mark: str = ""
    switch_hold_s: float = 180.0
    # How long a stream may be silent (a long prefill, a wait for a slot or a switch) before
    # the gateway sends an SSE comment of its own, well inside the idle timeouts of clients
    # and proxies (often 30-60 s).
    keepalive_s: float = 5.0
    # Browser origins allowed to call the gateway (CORS), e.g. https://chat.example.com; "*"
    # for any; none: CORS off, and browsers' preflights get 405.
    cors_origins: tuple[str, ...] = ()
    # How long a client has to send its request's headers, from its connection's opening or
    # its last answer (protocol.py): idle half-open connections do not pile up.
    header_timeout_s: float = 10.0
    # Worker processes on the one socket (serve.py); 0 in the environment: one per core
    # this process may run on, at most AUTO_WORKERS_CAP.
    workers: int = 1
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"

    @cached_property
    def key_priorities(self) -> bool:
        """Whether any key has a priority (vLLM's: apis.py forwards it)."""
        return any(key.priority is not None for key in self.api_keys)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{name}={raw!r}: use true or false")


def _number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: must be a {kind.__name__}") from None
    if value <= 0:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: must be above 0")
    return value


def _workers(raw: str) -> int:
    if raw.strip() == "0":
        return min(len(os.sched_getaffinity(0)), AUTO_WORKERS_CAP)
    return int(_number("WORKERS", raw, int))


def _names(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines, as systemd's EnvironmentFile= reads the ones roles/gateway writes
    (no quoting: the check play refuses control characters in every setting)."""
    try:
        # Lines end at "\n" only, as systemd reads them: str.splitlines would also end one at
        # a Unicode line separator inside a value and make a setting of the rest.
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as error:
        raise SettingsError(f"cannot read the settings file {path}: {error.strerror}") from None
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {name.strip(): value for name, value in pairs}


def load_api_keys(path: Path) -> tuple[ApiKey, ...]:
    """The keys of the file (keys.py), which must hold at least one (auth on)."""
    try:
        keys = read_key_file(path)
    except OSError as error:
        raise SettingsError(f"cannot read the API key file {path}: {error.strerror}") from None
    except KeyFileError as error:
        raise SettingsError(f"the API key file {path}, {error}") from None
    if not keys:
        raise SettingsError(
            f"auth is on but {path} holds no key: add one key per line "
            f"(gateway_api_keys in the inventory), or set {PREFIX}AUTH=false"
        )
    return keys


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment; raises SettingsError naming the variable to fix."""
    env = os.environ if env is None else env

    def get(name: str, default: str = "") -> str:
        return env.get(PREFIX + name, default).strip()

    backend = get("BACKEND")
    if not backend:
        raise SettingsError(f"{PREFIX}BACKEND is empty: set the name of the active backend")
    thinking_switch = get("THINKING_SWITCH", Settings.thinking_switch)
    if thinking_switch not in THINKING_SWITCHES:
        raise SettingsError(
            f"{PREFIX}THINKING_SWITCH={thinking_switch!r}: must be one of {', '.join(THINKING_SWITCHES)}"
        )
    pooling_engine = get("POOLING_ENGINE", Settings.pooling_engine)
    if pooling_engine not in POOLING_ENGINES:
        raise SettingsError(f"{PREFIX}POOLING_ENGINE={pooling_engine!r}: must be one of {', '.join(POOLING_ENGINES)}")
    model = get("MODEL")
    if not model:
        raise SettingsError(f"{PREFIX}MODEL is empty: set the public model name clients use")
    auth = _bool("AUTH", get("AUTH", "true"))
    keys_file = get("API_KEYS_FILE")
    api_keys: tuple[ApiKey, ...] = ()
    if auth:
        if not keys_file:
            raise SettingsError(
                f"auth is on but no API key file is configured: set {PREFIX}API_KEYS_FILE, or {PREFIX}AUTH=false"
            )
        api_keys = load_api_keys(Path(keys_file))
    return Settings(
        backend=backend,
        model=model,
        backend_model=get("BACKEND_MODEL") or model,
        model_aliases=_names(get("MODEL_ALIASES")),
        backend_url=get("BACKEND_URL", Settings.backend_url).rstrip("/"),
        backend_version_path=get("BACKEND_VERSION_PATH", Settings.backend_version_path),
        backend_version_field=get("BACKEND_VERSION_FIELD", Settings.backend_version_field),
        thinking_switch=thinking_switch,
        embedding_url=get("EMBEDDING_URL", Settings.embedding_url).rstrip("/"),
        embedding_model=get("EMBEDDING_MODEL"),
        reranker_url=get("RERANKER_URL", Settings.reranker_url).rstrip("/"),
        reranker_model=get("RERANKER_MODEL"),
        pooling_engine=pooling_engine,
        gpu_status_file=get("GPU_STATUS_FILE"),
        auth=auth,
        api_keys=api_keys,
        status_requires_key=_bool("STATUS_REQUIRES_KEY", get("STATUS_REQUIRES_KEY", "true")),
        max_body_bytes=int(_number("MAX_BODY_BYTES", get("MAX_BODY_BYTES", str(Settings.max_body_bytes)), int)),
        connect_timeout=_number("CONNECT_TIMEOUT", get("CONNECT_TIMEOUT", str(Settings.connect_timeout)), float),
        read_timeout=_number("READ_TIMEOUT", get("READ_TIMEOUT", str(Settings.read_timeout)), float),
        health_timeout=_number("HEALTH_TIMEOUT", get("HEALTH_TIMEOUT", str(Settings.health_timeout)), float),
        stall_timeout_s=_number("STALL_TIMEOUT_S", get("STALL_TIMEOUT_S", str(Settings.stall_timeout_s)), float),
        retry_after=int(_number("RETRY_AFTER", get("RETRY_AFTER", str(Settings.retry_after)), int)),
        max_connections=int(_number("MAX_CONNECTIONS", get("MAX_CONNECTIONS", str(Settings.max_connections)), int)),
        reload_file=get("RELOAD_FILE"),
        backend_file=get("BACKEND_FILE"),
        switch_mark=get("SWITCH_MARK"),
        switch_hold_s=_number("SWITCH_HOLD_S", get("SWITCH_HOLD_S", str(Settings.switch_hold_s)), float),
        keepalive_s=_number("KEEPALIVE_S", get("KEEPALIVE_S", str(Settings.keepalive_s)), float),
        cors_origins=_names(get("CORS_ORIGINS")),
        header_timeout_s=_number("HEADER_TIMEOUT_S", get("HEADER_TIMEOUT_S", str(Settings.header_timeout_s)), float),
        workers=_workers(get("WORKERS", str(Settings.workers))),
        host=get("HOST", Settings.host),
        port=int(_number("PORT", get("PORT", str(Settings.port)), int)),
        log_level=get("LOG_LEVEL", Settings.log_level).lower(),
    )
