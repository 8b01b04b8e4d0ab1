import os
from pathlib import Path

import pytest

from switchyard_gateway.settings import SettingsError, load, read_env_file

BASE = {"SWITCHYARD_GATEWAY_BACKEND": "vllm", "SWITCHYARD_GATEWAY_MODEL": "qwen3-8b"}


def test_auth_without_a_key_file_is_refused_with_what_to_set():
    with pytest.raises(SettingsError, match="SWITCHYARD_GATEWAY_API_KEYS_FILE"):
        load(BASE)


def test_auth_with_an_empty_key_file_is_refused(tmp_path: Path):
    keys = tmp_path / "api-keys"
    keys.write_text("# no key yet\n\n")
    with pytest.raises(SettingsError, match="holds no key"):
        load(BASE | {"SWITCHYARD_GATEWAY_API_KEYS_FILE": str(keys)})


def test_keys_come_one_per_line_from_the_file(tmp_path: Path):
    (tmp_path / "api-keys").write_text("sk-one\n  sk-two  \n")
    settings = load(BASE | {"SWITCHYARD_GATEWAY_API_KEYS_FILE": str(tmp_path / "api-keys")})
    assert [(key.secret, key.name) for key in settings.api_keys] == [("sk-one", "key-1"), ("sk-two", "key-2")]
    assert "sk-one" not in repr(settings)


def test_unknown_thinking_switch_names_the_choices():
    with pytest.raises(
        SettingsError, match="THINKING_SWITCH='think': must be one of chat_template_kwargs, reasoning_effort"
    ):
        load(BASE | {"SWITCHYARD_GATEWAY_THINKING_SWITCH": "think", "SWITCHYARD_GATEWAY_AUTH": "false"})


def test_unknown_pooling_engine_names_the_choices():
    with pytest.raises(SettingsError, match="POOLING_ENGINE='tei': must be one of vllm, infinity"):
        load(BASE | {"SWITCHYARD_GATEWAY_POOLING_ENGINE": "tei", "SWITCHYARD_GATEWAY_AUTH": "false"})


@pytest.mark.parametrize(
    ("name", "value"), [("AUTH", "maybe"), ("MAX_BODY_BYTES", "-1"), ("READ_TIMEOUT", "soon"), ("WORKERS", "-2")]
)
def test_malformed_values_name_the_variable(name: str, value: str):
    with pytest.raises(SettingsError, match=f"SWITCHYARD_GATEWAY_{name}="):
        load(BASE | {"SWITCHYARD_GATEWAY_AUTH": "false", f"SWITCHYARD_GATEWAY_{name}": value})


def test_backend_name_and_aliases():
    settings = load(
        BASE
        | {
            "SWITCHYARD_GATEWAY_AUTH": "false",
            "SWITCHYARD_GATEWAY_BACKEND_MODEL": "qwen3:8b",
            "SWITCHYARD_GATEWAY_MODEL_ALIASES": "a, b,,a",
            "SWITCHYARD_GATEWAY_BACKEND_URL": "http://127.0.0.1:8000/",
        }
    )
    assert (settings.backend_model, settings.model_aliases) == ("qwen3:8b", ("a", "b"))
    assert settings.backend_url == "http://127.0.0.1:8000"


def test_workers_zero_is_one_per_core_this_process_may_use():
    keyless = BASE | {"SWITCHYARD_GATEWAY_AUTH": "false"}
    assert load(keyless).workers == 1
    assert load(keyless | {"SWITCHYARD_GATEWAY_WORKERS": "3"}).workers == 3
    assert load(keyless | {"SWITCHYARD_GATEWAY_WORKERS": "0"}).workers == min(len(os.sched_getaffinity(0)), 8)


def test_the_settings_file_ends_a_line_only_where_systemd_does(tmp_path: Path):
    """A Unicode line separator inside a value is part of it, as systemd's EnvironmentFile=
    reads it: it cannot start a setting of its own (here, one that would turn auth off)."""
    env = tmp_path / "gateway.env"
    env.write_text("SWITCHYARD_GATEWAY_MODEL=qwen3-8b\u2028SWITCHYARD_GATEWAY_AUTH=false\n", encoding="utf-8")
    assert read_env_file(env) == {"SWITCHYARD_GATEWAY_MODEL": "qwen3-8b\u2028SWITCHYARD_GATEWAY_AUTH=false"}
