"""Flower's simulation runtime, the way Flower 1.41 supports it: a SuperLink started with ``--simulation`` (its
SuperExec runs the ServerApp and, on Ray, the virtual customers' ClientApps), and a run submitted to it with
``flwr run APP CONNECTION --federation-config "num-supernodes=N client-resources-num-cpus=C"``.

The ServerApp is the deployment's (``fedge.server.server_app``: the same round loop, strategy, SecAgg+ and central
DP); the ClientApp is ``fedge.client.simulation_app`` (the deployment's training on partitions of the task's
reference data). The SuperLink listens on a free loopback port, keeps its database and log in the simulation's
state dir, and is stopped by PID when the run ends.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType

from fedge.core.procs import fedge_env, free_port, spawn, stop_pid, wait_port
from fedge.server.coordinator import CoordinatorInfo
from fedge.server.flwr_cli import FlowerCLI
from fedge.server.registry import Registry
from fedge.server.run_config import RunConfig
from fedge.server.runs import RunOutcome, RunProgress, submit_and_follow


class SimulationLink:
    """A local SuperLink in simulation mode, for one study (``with SimulationLink(state) as link: ...``)."""

    def __init__(self, state: Path) -> None:
        self.state = Path(state).resolve()
        self.port = free_port()
        self._proc = spawn(
            [
                sys.executable,
                "-m",
                "fedge.server.superlink",
                "--simulation",
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                str(self.state / "superlink.db"),
                "--disable-runtime-dependency-installation",
            ],
            self.state / "logs" / "superlink.log",
            env=fedge_env(self.state / "flwr-superlink"),
            cwd=self.state,
        )
        try:
            wait_port("127.0.0.1", self.port, timeout=60, proc=self._proc)
        except BaseException:
            self.close()
            raise
        info = CoordinatorInfo(address=f"127.0.0.1:{self.port}", insecure=True, certs="", pid=self._proc.pid)
        self.cli = FlowerCLI(self.state, info)

    def run(
        self, registry: Registry, cfg: RunConfig, clients: int, cpus_per_client: int, progress: RunProgress
    ) -> RunOutcome:
        """Submit ``cfg`` (a run already in ``registry``) for ``clients`` virtual customers and follow it to its end."""
        federation = f"num-supernodes={clients} client-resources-num-cpus={cpus_per_client} client-resources-num-gpus=0"
        return submit_and_follow(self.state, registry, cfg, False, progress, self.cli, simulation=federation)

    def close(self) -> None:
        stop_pid(self._proc.pid)

    def __enter__(self) -> SimulationLink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
