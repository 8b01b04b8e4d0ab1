"""One run at a time on a host (playbooks/lock.yml): a second run fails at once naming the
first; a run that dies has its lock released by its guard on the control node, and a lock
left by a run whose guard died too does not block the next run from this control node.
The runs are scoped (--tags gateway): the lock's plays are tagged always, so a scoped run takes
and checks the lock as a full one does, in a third of the time."""

import os
import signal
import subprocess
import time

from conftest import PLAYBOOK_ENV, PROJECT, site_command

SCOPE = "gateway"


def lock_holder(host) -> str:
    """The description of the lock unit while it is active, else ""."""
    if host.run("systemctl is-active --quiet switchyard-run").rc != 0:
        return ""
    return host.check_output("systemctl show --property=Description --value switchyard-run")


def start_run(request) -> subprocess.Popen:
    command = site_command(request.path.parents[1], tags=SCOPE)
    return subprocess.Popen(
        command, cwd=PROJECT, env=PLAYBOOK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for_lock(host, run: subprocess.Popen) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        holder = lock_holder(host)
        if holder:
            return holder
        time.sleep(0.5)
    raise AssertionError("the first run never took the lock")


def test_a_second_run_fails_at_once_naming_the_first(host, run_site, request):
    first = start_run(request)
    holder = wait_for_lock(host, first)
    assert f" pid {first.pid} since " in holder
    # It outlives the longest steps a run may take: three downloads at models_download_timeout
    # (the default, 6 h each) and each service's start and rollback (llm_health_timeout 300 here).
    # D-Bus gives the microseconds (`t N`); systemctl shows them rounded, as "19h 27min".
    expiry = host.check_output(
        "busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/switchyard_2drun_2eservice"
        " org.freedesktop.systemd1.Service RuntimeMaxUSec"
    )
    expiry_us = int(expiry.split()[1])
    assert expiry_us >= (3 * 21600 + 6 * 300) * 1_000_000
    started = time.monotonic()
    second = run_site(tags=SCOPE)
    took = time.monotonic() - started
    assert second.returncode != 0
    assert f"Another run holds switchyard-sandbox: {holder.removeprefix('Switchyard run by ')}" in " ".join(
        second.output.split()
    )
    output, _ = first.communicate(timeout=900)
    assert first.returncode == 0, output
    assert lock_holder(host) == "", "the first run released its lock"
    print(f"the second run failed after {took:.1f} s, naming the first")


def wait_for_the_guard(host, run: subprocess.Popen) -> None:
    """Until the run's guard (playbooks/files/switchyard-run-guard) holds its lifeline to the host."""
    deadline = time.monotonic() + 120
    # The pattern does not match itself ([D]): pgrep skips itself, not the shell that runs it.
    while host.run("pgrep -f 'InvocationI[D] --value switchyard-run'").rc != 0:
        assert run.poll() is None and time.monotonic() < deadline, "the run's guard never reached the host"
        time.sleep(0.2)


def kill_the_guard(run: subprocess.Popen) -> None:
    """The guard alone, as if the control node had lost it: its lifelines stay open."""
    subprocess.run(["pkill", "--signal", "KILL", "--full", f"switchyard-run-guard {run.pid} "], check=True)


def test_a_run_that_dies_has_its_lock_released_by_its_guard(host, request):
    dead = start_run(request)
    wait_for_lock(host, dead)
    wait_for_the_guard(host, dead)
    os.killpg(dead.pid, signal.SIGKILL)
    killed = time.monotonic()
    dead.wait()
    while lock_holder(host):
        assert time.monotonic() - killed < 5, "the killed run's lock is still held after 5 s"
        time.sleep(0.1)
    print(f"the killed run's lock was released {time.monotonic() - killed:.1f} s after its death")


def test_a_lock_left_by_a_run_whose_guard_died_too_is_taken_over(host, run_site, request):
    dead = start_run(request)
    wait_for_lock(host, dead)
    wait_for_the_guard(host, dead)
    kill_the_guard(dead)
    os.killpg(dead.pid, signal.SIGKILL)
    dead.wait()
    time.sleep(2)
    assert lock_holder(host), "the killed run left its lock behind"
    run = run_site(tags=SCOPE)
    assert run.returncode == 0, run.output
    assert lock_holder(host) == ""
