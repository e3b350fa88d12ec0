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
    cpus_per_client: float = 1.0
    dp_noise: float = 0.0  # central DP noise multiplier (with dp_clip), as `fedge run launch --dp-noise`
    dp_clip: float = 0.0
    dp_adaptive: bool = False
    task_flags: tuple[tuple[str, object], ...] = ()  # RunConfig's task settings: labels, base_model, lora_*

    def __post_init__(self) -> None:
        if self.clients < 2 or self.rounds < 1:
            raise ConfigError(f"need clients >= 2 and rounds >= 1, got {self.clients}, {self.rounds}")


class SimClientFn:
    """Picklable client_fn (Ray ships it to its actors): node_config's partition-id plus the study's settings."""

    def __init__(self, task: str, alpha: float, base_model: str = "") -> None:
        self.task, self.alpha, self.base_model = task, alpha, base_model

    def __call__(self, context):
        from fedge.client.trainer import FedgeClient, NodeSettings

        nc = dict(context.node_config)
        settings = NodeSettings.from_node_config(
            {**nc, "task": self.task, "alpha": self.alpha, "base-model": self.base_model}
        )
        return FedgeClient(settings).to_client()


def make_apps(cfg: RunConfig, alpha: float):
    from flwr.client import ClientApp
    from flwr.serverapp import ServerApp

    from fedge.client.client_app import secagg_when_requested
    from fedge.client.clipping import clipping_when_requested
    from fedge.server.round_loop import run_federation

    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:
        context.run_config.update(cfg.to_flower())
        run_federation(grid, context)

    return server_app, ClientApp(
        client_fn=SimClientFn(cfg.task, alpha, cfg.base_model), mods=[secagg_when_requested, clipping_when_requested]
    )


def simulate(sim: SimulationConfig, out: Path | None = None, as_json: bool = False) -> int:
    import os

    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    state = Path(out or tempfile.mkdtemp(prefix="fedge-sim-")).resolve()
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
        **cast(dict[str, Any], dict(sim.task_flags)),
    )
    cfg = with_base_identity(cfg)
    cfg = cfg.with_task_defaults(cfg.make_task().defaults)
    run_id = registry.create_run(sim.task, sim.rounds, {**asdict(cfg), "simulation": asdict(sim)})
    cfg = cfg.with_(fedge_run_id=run_id)
    server_app, client_app = make_apps(cfg, sim.alpha)
    console = Console(stderr=True)
    console.print(
        f"simulating {sim.clients} customers (Dirichlet alpha={sim.alpha}), {sim.rounds} rounds of"
        f" {sim.task}, SecAgg+ {'on' if sim.secagg else 'off'}; state in {state}"
    )
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=sim.clients,
        backend_config={
            "client_resources": {"num_cpus": sim.cpus_per_client, "num_gpus": 0.0},
            "init_args": {"log_to_driver": False},
        },
    )
    from fedge.server.runs import rounds_table, status_document

    doc = status_document(registry, run_id)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        Console().print(rounds_table(doc["rounds"]))
    return 0 if doc["status"] == "completed" else 1
