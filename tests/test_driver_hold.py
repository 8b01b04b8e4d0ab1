"""Which installed packages the nvidia role holds (roles/nvidia/vars/main.yml,
__nvidia_driver_package_regex), with the names Ubuntu's and NVIDIA's archives use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
HOLD = re.compile(yaml.safe_load((PROJECT / "roles/nvidia/vars/main.yml").read_text())["__nvidia_driver_package_regex"])


@pytest.mark.parametrize(
    "package",
    [
        "nvidia-driver-580-open",
        "nvidia-utils-580-server",
        "nvidia-headless-no-dkms-580-server-open",
        "libnvidia-compute-580",
        "cuda-drivers-580",
        "linux-modules-nvidia-580-6.8.0-45-generic",
        "linux-modules-nvidia-580-server-open-6.8.0-45-generic",
    ],
)
def test_the_driver_and_its_per_kernel_modules_are_held(package):
    assert HOLD.match(package)


@pytest.mark.parametrize(
    "package",
    [
        # Kernel-tracking meta packages: held, a kernel update would come without the module.
        "linux-modules-nvidia-580-generic",
        "linux-modules-nvidia-580-server-open-generic",
        "linux-modules-nvidia-580-open-generic-hwe-24.04",
        "nvidia-container-toolkit",
        "cuda-toolkit-12-8",
    ],
)
def test_what_must_move_is_not_held(package):
    assert not HOLD.match(package)
