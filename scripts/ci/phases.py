"""The phases of `make test`, what each needs, and how each one runs and is timed."""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from scripts.ci import lanes
from scripts.ci.report import Outcome, Step

PROJECT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Phase:
    """A command run once, its output in a log of its own."""

    name: str
    command: tuple[str, ...]
    needs: tuple[str, ...] = ()
    # Phases off the longest chain that measure no time yield the CPU (nice 10) to the ones on
    # it: the llama-server compile and the pooling artifacts, which default and switch wait for,
    # then the scenarios. They start as soon as what they need is there, in no slot of their own
    # (pipeline.run_all).
    background: bool = False

    def run(self, logs: Path, t0: float) -> Outcome:
        log = log_path(logs, self.name)
        command = ["nice", "-n", "10", *self.command] if self.background else list(self.command)
        started = time.monotonic()
        with log.open("w") as out:
            passed = run_logged(command, out, os.environ) == 0
        return Outcome(self.name, passed, started - t0, time.monotonic() - started, log)


@dataclass(frozen=True)
class Scenario(Phase):
    """A Molecule scenario in a lane of its own: each action of its test sequence run and timed
    alone, and its sandbox hosts destroyed at the end whatever failed."""

    command: tuple[str, ...] = ()
    # Served inside the lane while the scenario runs (the gpu scenario's repository fixture).
    services: tuple[tuple[str, ...], ...] = ()

    def run(self, logs: Path, t0: float) -> Outcome:
        log = log_path(logs, self.name)
        scenario = self.name.removeprefix("molecule ")
        env = os.environ | {
            # The sandbox hosts' container names, and an SSH connection cache of the lane's own:
            # every lane reaches its host as root@127.0.0.1:2222, which Ansible's ControlPath
            # would otherwise share between lanes.
            "SWITCHYARD_SANDBOX": f"switchyard-molecule-{scenario}",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(Path.home() / ".ansible" / f"cp-{scenario}"),
        }
        started = time.monotonic()
        steps: list[Step] = []
        with log.open("w") as out, lanes.lane(f"switchyard-{scenario}") as enter, ExitStack() as stack:
            for service in self.services:
                process = subprocess.Popen([*enter, *service], stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT)
                stack.callback(stop, process)
            for action in test_sequence(scenario):
                steps.append(molecule(enter, action, scenario, out, env))
                if not steps[-1].passed:
                    steps.append(molecule(enter, "destroy", scenario, out, env))
                    break
        passed = all_passed(steps)
        return Outcome(self.name, passed, started - t0, time.monotonic() - started, log, steps)


def log_path(logs: Path, phase: str) -> Path:
    return logs / (re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-") + ".log")


def molecule(enter: list[str], action: str, scenario: str, out, env) -> Step:
    out.write(f"\n==> molecule {action} --scenario-name {scenario}\n")
    out.flush()
    if action == "converge":
        # The slowest tasks of the first run, listed at its end: where a converge's time goes.
        env = env | {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
        env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "20"
    started = time.monotonic()
    code = run_logged([*enter, "molecule", action, "--scenario-name", scenario], out, env)
    return Step(action, code == 0, time.monotonic() - started)


def all_passed(steps: list[Step]) -> bool:
    return all(step.passed for step in steps)


def test_sequence(scenario: str) -> list[str]:
    config = yaml.safe_load((PROJECT / "molecule" / scenario / "molecule.yml").read_text())
    return config["scenario"]["test_sequence"]


def run_logged(command: list[str], out, env) -> int:
    return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT, check=False).returncode


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait()


SANDBOX = "artifacts: sandbox"
POOLING = "artifacts: pooling"
DOUBLES = "artifacts: test doubles"
VLLM = "artifacts: vllm"

# In the order they start when a slot is free: the three longest scenarios (default, switch,
# fleet) as early as their artifacts allow, the rest around them. The gateway tests need only
# the sandbox's llama-server, but wait for the test doubles too: started when the sandbox was
# built, they took the slot the switch scenario, the longest, then waited 80 s for.
PHASES: list[Phase] = [
    Phase(SANDBOX, ("scripts/sandbox/build.sh",)),
    Phase(POOLING, ("scripts/sandbox/build_pooling.sh",)),
    Phase("lint", ("scripts/ci/lint.sh",), background=True),
    Phase(DOUBLES, ("sh", "-c", "molecule/default/build_test_doubles.sh && molecule/gpu/build_repo.sh"), (SANDBOX,)),
    Scenario("molecule default", needs=(SANDBOX, POOLING, DOUBLES)),
    Scenario("molecule switch", needs=(SANDBOX, POOLING, DOUBLES)),
    Phase("unit tests", ("pytest", "tests/"), background=True),
    Phase(VLLM, ("scripts/sandbox/build_vllm.sh",), (POOLING,), background=True),
    Scenario("molecule fleet", needs=(SANDBOX, DOUBLES)),
    Phase("gateway tests", ("pytest", "gateway/tests/"), (SANDBOX, DOUBLES)),
    Scenario("molecule vllm", needs=(SANDBOX, VLLM)),
    Scenario(
        "molecule gpu",
        needs=(SANDBOX, DOUBLES),
        services=(("python3", "molecule/gpu/serve_repo.py", ".cache/gpu-repo"),),
    ),
    Scenario("molecule docker", needs=(SANDBOX, DOUBLES)),
]


def needed(names: list[str]) -> list[Phase]:
    """The phases named, with every phase they need, in PHASES order."""
    by_name = {phase.name: phase for phase in PHASES}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise SystemExit(f"no such phase: {', '.join(unknown)}; phases: {', '.join(by_name)}")
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].needs)
    return [phase for phase in PHASES if phase.name in wanted]
