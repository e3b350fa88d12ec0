"""``fedge simulate``: the same ServerApp round loop and ClientApp training on Flower's simulation engine (Ray),
with virtual customers holding Dirichlet non-IID partitions of the task's reference data. For what-if studies
(how many customers, how skewed, how many rounds) before touching real customers."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from fedge.edge_runtime.common.errors import ConfigError
from fedge.server.registry import Registry, registry_path
from fedge.server.run_config import RunConfig
from fedge.server.runs import with_base_identity


@dataclass(frozen=True)
class SimulationConfig:
    task: str = "digits"
    clients: int = 100
    rounds: int = 3
    alpha: float = 0.5  # Dirichlet concentration over labels; <= 0 means IID
    local_epochs: int = -1
    lr: float = -1.0
    proximal_mu: float = -1.0  # as `fedge run launch --proximal-mu`; -1: the task's
    secagg: bool = False
    seed: int = 0
    cpus_per_client: int = 1  # whole CPUs Ray reserves per virtual customer (Flower's simulation config is int)
    dp_noise: float = 0.0  # central DP noise multiplier (with dp_clip), as `fedge run launch --dp-noise`
    dp_clip: float = 0.0
    dp_adaptive: bool = False
    task_flags: tuple[tuple[str, object], ...] = ()  # RunConfig's task settings: labels, base_model, lora_*

    def __post_init__(self) -> None:
        if self.clients < 2 or self.rounds < 1 or self.cpus_per_client < 1:
            raise ConfigError(
                f"need clients >= 2, rounds >= 1 and cpus per client >= 1, got {self.clients}, {self.rounds},"
                f" {self.cpus_per_client}"
            )


def simulate(sim: SimulationConfig, out: Path | None = None, as_json: bool = False) -> int:
    """The study on Flower's simulation runtime (fedge.server.simulation): its own local SuperLink, one run of
    fedge's ServerApp with ``sim.clients`` virtual customers -> exit code (0: the run completed)."""
    from fedge.server.runs import ConsoleProgress, rounds_table, status_document
    from fedge.server.simulation import SimulationLink

    state = Path(out or tempfile.mkdtemp(prefix="fedge-sim-")).resolve()
    state.mkdir(parents=True, exist_ok=True)
    registry = Registry(registry_path(state))
    cfg = RunConfig(
        task=sim.task,
        num_rounds=sim.rounds,
        min_clients=2,
        local_epochs=sim.local_epochs,
        lr=sim.lr,
        proximal_mu=sim.proximal_mu,
        secagg=sim.secagg,
        state_dir=str(state),
        seed=sim.seed,
        round_timeout=600,
        wait_clients_timeout=300,
        dp_noise=sim.dp_noise,
        dp_clip=sim.dp_clip,
        dp_adaptive=sim.dp_adaptive,
        sim_alpha=sim.alpha,
        **cast(dict[str, Any], dict(sim.task_flags)),
    )
    cfg = with_base_identity(cfg)
    cfg = cfg.with_task_defaults(cfg.make_task().defaults)
    run_id = registry.create_run(sim.task, sim.rounds, {**asdict(cfg), "simulation": asdict(sim)})
    cfg = cfg.with_(fedge_run_id=run_id)
    Console(stderr=True).print(
        f"simulating {sim.clients} customers (Dirichlet alpha={sim.alpha}), {sim.rounds} rounds of"
        f" {sim.task}, SecAgg+ {'on' if sim.secagg else 'off'}; state in {state}"
    )
    with SimulationLink(state) as link:
        outcome = link.run(registry, cfg, sim.clients, sim.cpus_per_client, ConsoleProgress())
    doc = status_document(registry, run_id)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        Console().print(rounds_table(doc["rounds"]))
    return outcome.exit_code
