"""The GPU stack as the host shows it after a converge against the repository fixture.

nvidia-smi and nvidia-ctk are test doubles (molecule/gpu/files/) that log their calls to
/var/log/nvidia-test-doubles.log; everything else - apt, the keyring and deb822 sources,
the pin, dpkg holds, Podman's CDI injection - is real.
"""

import pytest

DOUBLES_LOG = "/var/log/nvidia-test-doubles.log"


@pytest.mark.parametrize("name", ["nvidia-cuda", "nvidia-container-toolkit"])
def test_repository_is_a_signed_deb822_source(host, name):
    source = host.file(f"/etc/apt/sources.list.d/{name}.sources")
    assert source.mode == 0o644
    assert f"Signed-By: /etc/apt/keyrings/{name}.asc" in source.content_string
    assert "Suites: /" in source.content_string
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file(f"/etc/apt/keyrings/{name}.asc").content_string


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


def test_nouveau_is_blacklisted(host):
    assert "blacklist nouveau" in host.file("/etc/modprobe.d/blacklist-nouveau.conf").content_string


def test_cdi_spec_was_generated_once(host):
    assert host.file("/etc/cdi/nvidia.yaml").exists
    calls = host.file(DOUBLES_LOG).content_string.splitlines()
    assert calls.count("nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml") == 1


def test_container_sees_the_gpu_through_cdi(host):
    listing = host.check_output(
        "podman run --rm --device nvidia.com/gpu=all --entrypoint nvidia-smi"
        " localhost/switchyard/ollama-test-double:latest -L"
    )
    assert listing.startswith("GPU 0:")


def test_first_install_leaves_a_reboot_pending_across_runs(host):
    # The sandbox shares the machine's kernel, so its boot id never changes: the converge
    # and the idempotence run both saw the reboot pending and skipped the GPU checks.
    marker = host.file("/var/lib/misc/switchyard-nvidia-reboot-pending")
    boot_id = host.file("/proc/sys/kernel/random/boot_id").content_string
    assert marker.content_string.strip() == boot_id.strip()
    assert "nvidia-smi --query-gpu" not in host.file(DOUBLES_LOG).content_string


def test_after_a_reboot_the_gpu_is_checked_on_the_host_and_in_a_container(host, run_site):
    host.run("rm -f /var/lib/misc/switchyard-nvidia-reboot-pending")  # what a new boot id means
    run = run_site(playbook="playbooks/gpu.yml")
    assert run.returncode == 0, run.output
    assert "changed=0" in run.output
    # The container's own nvidia-smi call is logged inside the container; the smoke test
    # task itself fails unless the container printed "GPU 0".
    calls = host.file(DOUBLES_LOG).content_string.splitlines()
    assert "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader" in calls


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
