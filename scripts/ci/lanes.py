"""A network namespace per Molecule scenario, so that scenarios run side by side.

Each sandbox host runs with `--network host` and its services keep the ports README names:
two of them on the machine's own loopback would collide. In a namespace of its own a
scenario has a loopback of its own (where its tests and its sandbox hosts meet, as on one
server) and reaches the package registries through slirp4netns, a user-mode NAT that needs
no firewall rules and never routes into the machine's own loopback. Commands enter the
namespace with nsenter, which changes the network namespace only: Podman's storage and
mounts stay the machine's, so a sandbox started in a lane is an ordinary container.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def remove(name: str) -> None:
    """Removes a lane left by an earlier run that was killed (its slirp4netns dies with it)."""
    if (NETNS_DIR / name).exists():
        subprocess.run(["ip", "netns", "delete", name], check=True)


@contextmanager
def lane(name: str) -> Iterator[list[str]]:
    """A network namespace with loopback up and a NAT to the outside; yields the command
    prefix that runs a command inside it."""
    remove(name)
    subprocess.run(["ip", "netns", "add", name], check=True)
    enter = ["nsenter", f"--net={NETNS_DIR / name}"]
    subprocess.run([*enter, "ip", "link", "set", "lo", "up"], check=True)
    slirp = subprocess.Popen(
        ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
         "--netns-type=path", str(NETNS_DIR / name), "tap0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_route(enter, slirp)
        yield enter
    finally:
        slirp.terminate()
        slirp.wait()
        remove(name)


def wait_for_route(enter: list[str], slirp: subprocess.Popen[bytes]) -> None:
    """Waits until slirp4netns has configured the namespace's default route."""
    for _ in range(100):
        routes = subprocess.run([*enter, "ip", "route"], capture_output=True, text=True, check=True).stdout
        if routes.startswith("default"):
            return
        if slirp.poll() is not None:
            raise RuntimeError(f"slirp4netns exited with {slirp.returncode}")
        time.sleep(0.1)
    raise RuntimeError("slirp4netns did not configure the lane's network in 10 s")
