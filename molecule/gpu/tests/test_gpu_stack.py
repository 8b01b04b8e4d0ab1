"""The GPU stack as the host shows it after a converge against the repository fixture.

nvidia-smi and nvidia-ctk are test doubles (molecule/gpu/files/) that log their calls to
/var/log/nvidia-test-doubles.log; everything else - apt, the keyring and deb822 sources,
the pin, dpkg holds, Podman's CDI injection - is real.
"""

import json
import re
from urllib.parse import urlsplit

import pytest

DOUBLES_LOG = "/var/log/nvidia-test-doubles.log"


@pytest.mark.parametrize("name", ["nvidia-cuda", "nvidia-container-toolkit"])
def test_repository_is_a_signed_deb822_source(host, name):
    source = host.file(f"/etc/apt/sources.list.d/{name}.sources")
    assert source.mode == 0o644
    assert f"Signed-By: /etc/apt/keyrings/{name}.asc" in source.content_string
    assert "Suites: /" in source.content_string
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file(f"/etc/apt/keyrings/{name}.asc").content_string


def test_a_mirrors_credentials_reach_apt_only_through_roots_auth_file(host):
    """The toolkit's URLs carry a user and password (the fixture's server refuses requests
    without them, so its key and packages being installed shows that get_url and apt sent them)."""
    assert "fixture-secret" not in host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    auth = host.file("/etc/apt/auth.conf.d/switchyard-nvidia.conf")
    assert (auth.user, auth.group, auth.mode) == ("root", "root", 0o600)
    assert "machine http://127.0.0.1:8765/libnvidia-container/ login switchyard-test password fixture-secret" in (
        auth.content_string.splitlines()
    )


def test_driver_branch_is_pinned(host):
    pin = host.file("/etc/apt/preferences.d/nvidia-driver.pref").content_string
    assert "Pin: version 580.*" in pin and "Pin-Priority: 1001" in pin


@pytest.mark.parametrize("package", ["nvidia-driver-580-open", "cuda-toolkit-12-8", "nvidia-container-toolkit"])
def test_packages_are_installed(host, package):
    assert host.package(package).is_installed


def test_driver_is_held_and_the_container_toolkit_is_not(host):
    held = host.check_output("apt-mark showhold").split()
    assert "nvidia-driver-580-open" in held
    assert "nvidia-container-toolkit" not in held


def apt_config_list(host, name: str) -> list[str]:
    """A list setting as apt itself reads the configuration (unattended-upgrades asks apt)."""
    prefix = f"{name}:: "
    dump = host.check_output(f"apt-config dump {name}")
    return [line.split('"')[1] for line in dump.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize(
    ("package", "upgraded"),
    [
        ("nvidia-driver-580-open", False),
        ("nvidia-utils-580-server", False),
        ("libnvidia-compute-580", False),
        ("linux-modules-nvidia-580-server-open-generic", True),  # follows the kernel (held per kernel)
        ("cuda-toolkit-12-8", False),
        ("nvidia-container-toolkit", True),
        ("nvidia-container-toolkit-base", True),
        ("libnvidia-container1", True),
        ("libnvidia-container-tools", True),
    ],
)
def test_unattended_upgrades_leave_the_driver_alone_and_update_the_container_toolkit(host, package, upgraded):
    """unattended-upgrades skips a package when one of its blacklist's Python regular
    expressions matches the start of its name (re.match)."""
    blacklist = apt_config_list(host, "Unattended-Upgrade::Package-Blacklist")
    assert any(re.match(pattern, package) for pattern in blacklist) != upgraded, blacklist


def test_unattended_upgrades_take_the_container_toolkit_from_nvidias_repository(host):
    source = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    site = urlsplit(re.search(r"^URIs: (\S+)", source, re.MULTILINE).group(1)).hostname
    assert f"site={site}" in apt_config_list(host, "Unattended-Upgrade::Origins-Pattern")


def test_nouveau_is_blacklisted(host):
    assert "blacklist nouveau" in host.file("/etc/modprobe.d/blacklist-nouveau.conf").content_string


def gpu_check(host) -> tuple[int, dict]:
    """The conformance check the role installs, as the timer runs it."""
    result = host.run("/usr/local/libexec/switchyard/gpu-check --engine=podman")
    return result.rc, json.loads(result.stdout)


def reboot(host) -> None:
    """What a reboot does to this host, simulated: a new boot id (the pending-reboot mark no
    longer matches), the installed driver's module loaded (the doubles' module-version, which
    nvidia-smi compares with its own, the userland's), and /dev/nvidia-uvm created."""
    userland = host.check_output("dpkg-query -W -f '${Version}' nvidia-driver-580-open").split("-")[0]
    host.run_test(
        "rm -f /var/lib/misc/switchyard-nvidia-reboot-pending && mkdir -p /var/lib/nvidia-test-doubles"
        f" && echo {userland} > /var/lib/nvidia-test-doubles/module-version && touch /dev/nvidia-uvm"
    )


def cdi_generations(host) -> list[str]:
    """The role's calls of `nvidia-ctk cdi generate` (into the spec Podman reads)."""
    calls = host.file(DOUBLES_LOG).content_string.splitlines()
    return [call for call in calls if call.startswith("nvidia-ctk cdi generate --output=/etc/cdi/")]


def test_first_install_waits_for_the_reboot_and_makes_no_cdi_spec_before_it(host):
    """The converge and the idempotence run both found the driver not loaded (the sandbox
    keeps its boot id): a reboot is pending, the GPU checks are skipped, and no CDI spec is
    made from a driver that is not running."""
    marker = host.file("/var/lib/misc/switchyard-nvidia-reboot-pending")
    boot_id = host.file("/proc/sys/kernel/random/boot_id").content_string
    assert marker.content_string.strip() == boot_id.strip()
    assert cdi_generations(host) == []
    assert not host.file("/etc/cdi/nvidia.yaml").exists
    assert "nvidia-smi --query-gpu=name" not in host.file(DOUBLES_LOG).content_string
    code, status = gpu_check(host)
    assert code == 1 and status["checks"]["driver"]["fix"].startswith("reboot the host")


def test_cdi_generation_fails_like_the_real_one_without_a_driver(host):
    generate = host.run("nvidia-ctk cdi generate --output=/tmp/spec.yaml")
    assert generate.rc == 1 and "failed to initialize NVML: Driver Not Loaded" in generate.stderr


def test_after_the_reboot_the_spec_is_made_from_the_loaded_driver_and_the_gpu_conforms(host, run_site):
    reboot(host)
    run = run_site(playbook="playbooks/gpu.yml")
    assert run.returncode == 0, run.output
    assert cdi_generations(host) == ["nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"]
    assert "libnvidia-ml.so.580.95.05" in host.file("/etc/cdi/nvidia.yaml").content_string
    code, status = gpu_check(host)
    assert (code, status["status"], status["driver_version"]) == (0, "ok", "580.95.05"), status
    calls = host.file(DOUBLES_LOG).content_string.splitlines()
    assert "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader" in calls
    again = run_site(playbook="playbooks/gpu.yml")
    assert again.returncode == 0 and "changed=0" in again.output, again.output
    assert len(cdi_generations(host)) == 1


@pytest.mark.parametrize("name", ["all", "0", "GPU-00000000-0000-0000-0000-000000000000"])
def test_container_sees_the_gpu_through_cdi(host, name):
    """By each name the units may give it (llm_*_gpu_devices)."""
    listing = host.check_output(
        f"podman run --rm --device nvidia.com/gpu={name} --entrypoint nvidia-smi"
        " localhost/switchyard/ollama-test-double:latest -L"
    )
    assert listing.startswith("GPU 0:")


def test_a_service_given_a_gpu_the_host_lacks_fails_before_any_change(host, run_site):
    """As nvidia-smi -L lists the host's GPUs (the double: one, index 0)."""
    run = run_site('{"llm_backend_gpu_devices": ["0", "7"]}', playbook="playbooks/services.yml")
    assert run.returncode != 0
    assert (
        "llm_backend_gpu_devices names 7, which `nvidia-smi -L` does not list: the host has 0,"
        " GPU-00000000-0000-0000-0000-000000000000."
    ) in " ".join(run.output.split())
    # The llm role's first change would have been its directories.
    assert not host.file("/var/lib/switchyard/llamacpp").exists


def test_the_timer_writes_the_status_the_gateway_shows(host):
    assert host.service("switchyard-gpu-check.timer").is_enabled
    assert host.service("switchyard-gpu-check.timer").is_running
    host.run_test("rm -f /run/switchyard-gpu/status.json && systemctl start switchyard-gpu-check.service")
    status = json.loads(host.file("/run/switchyard-gpu/status.json").content_string)
    assert status["status"] == "ok" and status["checks"]["uvm"]["status"] == "ok"


def test_the_timer_looks_into_whichever_container_the_backend_unit_runs(host):
    """Found by the label every service container carries (io.switchyard.unit), not by a
    name: a switch by `--tags services` leaves this unit as it is, and it still finds the new
    backend's container."""
    image = "localhost/switchyard/ollama-test-double:latest"

    def container_check() -> dict:
        host.run_test("systemctl start switchyard-gpu-check.service")
        return json.loads(host.file("/run/switchyard-gpu/status.json").content_string)["checks"]["container"]

    host.run_test(
        "podman run -d --name llm-any-backend --label io.switchyard.unit=llm-backend --device nvidia.com/gpu=all"
        f" --entrypoint sleep {image} infinity"
    )
    host.run_test(
        "podman run -d --name llm-embedding-like --label io.switchyard.unit=llm-embedding"
        f" --entrypoint sleep {image} infinity"
    )
    try:
        assert container_check() == {"status": "ok", "container": "llm-any-backend"}
        host.run_test("podman rm -f -t 0 llm-any-backend")
        assert container_check() == {"status": "skipped", "reason": "no backend container runs"}
    finally:
        host.run("podman rm -f -t 0 llm-any-backend llm-embedding-like")


def test_a_changed_driver_says_a_reboot_is_pending(host, run_site):
    host.run("apt-mark unhold nvidia-driver-580-open && apt-get remove -y -q nvidia-driver-580-open")
    run = run_site(playbook="playbooks/gpu.yml")
    assert run.returncode == 0, run.output
    assert "nvidia_reboot_allowed is false" in run.output
    assert host.package("nvidia-driver-580-open").is_installed
    # The previous test cleared the mark, as a new boot would: the reinstall set it again.
    marker = host.file("/var/lib/misc/switchyard-nvidia-reboot-pending")
    boot_id = host.file("/proc/sys/kernel/random/boot_id").content_string
    assert marker.exists and marker.content_string.strip() == boot_id.strip()


def test_a_driver_upgraded_outside_the_role_is_a_mismatch_until_the_reboot_and_the_spec_follows(host, run_site):
    """An upgrade by hand (or by an unattended upgrade that was let through): the libraries
    move to 580.105.08 while 580.95.05 stays loaded, the classic "Driver/library version
    mismatch". It is reported with its fix, on the host and in the status file, until the
    reboot; then the run makes the spec anew for the new driver."""
    reboot(host)
    settled = run_site(playbook="playbooks/gpu.yml")
    assert settled.returncode == 0, settled.output
    upgrade = "http://127.0.0.1:8765/upgrade"
    host.run_test(
        "apt-mark unhold nvidia-driver-580-open libnvidia-compute-580 && cd /tmp"
        f" && python3 -c \"import urllib.request as u; [u.urlretrieve('{upgrade}/'+n, n) for n in"
        " ['libnvidia-compute-580_580.105.08-1_amd64.deb', 'nvidia-driver-580-open_580.105.08-1_amd64.deb']]\""
        " && dpkg -i libnvidia-compute-580_580.105.08-1_amd64.deb nvidia-driver-580-open_580.105.08-1_amd64.deb"
    )
    code, status = gpu_check(host)
    assert code == 1 and "Driver/library version mismatch" in status["checks"]["driver"]["problem"]
    assert status["checks"]["driver"]["fix"] == "reboot the host to load the installed driver"
    host.run_test("systemctl start switchyard-gpu-check.service")
    assert "Driver/library version mismatch" in host.file("/run/switchyard-gpu/status.json").content_string

    mismatched = run_site(playbook="playbooks/gpu.yml")
    assert mismatched.returncode != 0
    assert "Driver/library version mismatch" in mismatched.output and "reboot the host" in mismatched.output

    reboot(host)
    rebooted = run_site(playbook="playbooks/gpu.yml")
    assert rebooted.returncode == 0, rebooted.output
    assert cdi_generations(host)[-1] == "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
    assert "libnvidia-ml.so.580.105.08" in host.file("/etc/cdi/nvidia.yaml").content_string
    code, status = gpu_check(host)
    assert (code, status["driver_version"]) == (0, "580.105.08"), status
    assert {"nvidia-driver-580-open", "libnvidia-compute-580"} <= set(host.check_output("apt-mark showhold").split())


def test_secure_boot_with_unsigned_modules_fails_before_any_change(host, run_site):
    host.run("mkdir -p /srv/test-efi && printf '\\007\\000\\000\\000\\001' > /srv/test-efi/SecureBoot")
    before = host.check_output("ls -l --time-style=+%s /etc/apt/sources.list.d")
    try:
        run = run_site(playbook="playbooks/gpu.yml")
    finally:
        host.run("rm -f /srv/test-efi/SecureBoot")
    assert run.returncode != 0
    assert "Secure Boot is on" in run.output and "nvidia_driver_source to 'ubuntu'" in run.output
    assert host.check_output("ls -l --time-style=+%s /etc/apt/sources.list.d") == before


def test_host_without_a_gpu_skips_the_stack_in_one_line(host, run_site):
    run = run_site("gpu_pci_devices_dir=/sys/bus/pci/devices", playbook="playbooks/gpu.yml")
    assert run.returncode == 0, run.output
    assert "No GPU in use: services run on the CPU" in run.output
    assert "changed=0" in run.output


def test_forcing_a_gpu_on_a_host_without_one_fails_with_the_reason(host, run_site):
    run = run_site("gpu_enabled=true", "gpu_pci_devices_dir=/sys/bus/pci/devices", playbook="playbooks/gpu.yml")
    assert run.returncode != 0
    assert "gpu_enabled is true but" in run.output and "has no NVIDIA device" in run.output
