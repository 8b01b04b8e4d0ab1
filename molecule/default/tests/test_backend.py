"""What a user observes on the host after `ansible-playbook site.yml` with llama.cpp."""

import json
import sys

from conftest import PROJECT, backend_containers

SERVED_NAME = "tiny-llama"
CHAT = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}


def test_backend_unit_is_enabled(host):
    assert host.service("llm-backend").is_enabled


def test_backend_unit_is_active(host):
    assert host.service("llm-backend").is_running


def test_backend_port_is_listening_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:8000").is_listening
    assert not host.socket("tcp://0.0.0.0:8000").is_listening


def test_health_answers(http):
    assert http.get("/health").status_code == 200


def test_models_lists_the_served_name(http):
    ids = [model["id"] for model in http.get("/v1/models").json()["data"]]
    assert SERVED_NAME in ids


def test_chat_completion_returns_a_message(http):
    reply = http.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    choice = reply.json()["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)


def test_streamed_chat_completion_is_sse_ending_in_done(http):
    with http.stream("POST", "/v1/chat/completions", json=CHAT | {"stream": True}) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)


def test_exactly_one_backend_container_runs(host):
    assert list(backend_containers(host)) == ["llm-llamacpp"]


def test_installed_units_verify(host):
    units = " ".join(f"/etc/systemd/system/llm-{name}.service" for name in ("backend", "embedding", "reranker"))
    result = host.run(f"systemd-analyze verify {units}")
    assert result.rc == 0, result.stderr


# Words an operator may give in llm_*_extra_args that systemd would split, expand or unescape.
AWKWARD_WORDS = ["a b", "100%", "%n", "$HOME", "${X}", "it's", 'say "hi"', "back\\slash", "tab\\there", ";", "x;y", ""]


def test_extra_args_reach_the_process_word_for_word(host):
    """The quoting the units' Exec= lines get (filter_plugins/switchyard.py, systemd_argv), as
    the host's own systemd reads it back: a throwaway unit prints the argv it was given."""
    sys.path.insert(0, str(PROJECT / "filter_plugins"))
    from switchyard import systemd_argv

    print_argv = "/usr/bin/python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    unit = f"[Service]\nType=oneshot\nExecStart={print_argv}{systemd_argv(AWKWARD_WORDS)}\n"
    path = "/run/systemd/system/switchyard-argv-probe.service"
    host.run_expect([0], f"cat > {path} <<'UNIT'\n{unit}UNIT")
    try:
        host.run_expect([0], "systemctl daemon-reload && systemctl start switchyard-argv-probe.service")
        printed = host.check_output("journalctl --unit switchyard-argv-probe --output cat --no-pager | grep '^\\['")
        assert json.loads(printed.splitlines()[-1]) == AWKWARD_WORDS
    finally:
        host.run(f"rm -f {path} && systemctl daemon-reload")


def test_the_servers_own_log_and_the_readiness_probe_reach_the_journal(host):
    journal = host.check_output("journalctl --unit llm-backend --no-pager --output cat").splitlines()
    # Written by llama-server itself, not by systemd or podman about it.
    assert any(line.endswith("llama_server: listening on http://127.0.0.1:8000") for line in journal)
    assert "chat service serving tiny-llama" in " ".join(journal)
