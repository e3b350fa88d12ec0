"""The run configuration: one frozen dataclass that travels as Flower's run config (hyphenated keys).

It is also the single source of the FAB's ``[tool.flwr.app.config]`` defaults, since Flower accepts
overrides only for keys declared there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class RunConfig:
    fedge_run_id: int = 0
    state_dir: str = ""
    task: str = "digits"
    num_rounds: int = 3            # total planned rounds of the fedge run
    start_round: int = 0           # last completed round; > 0 when resuming
    min_clients: int = 2           # fewer surviving clients in a round -> the run fails
    local_epochs: int = -1         # -1: the task's default
    batch_size: int = -1
    lr: float = -1.0
    secagg: bool = True
    round_timeout: float = 120.0   # seconds to wait for replies in each message exchange
    wait_clients_timeout: float = 120.0  # seconds to wait for min_clients to be connected
    max_round_attempts: int = 3    # a halted SecAgg+ round is retried this many times
    init: str = ""                 # checkpoint to start from (fine-tuning); "" = fresh model
    freeze: str = ""               # comma-separated fnmatch patterns of parameters kept frozen
    seed: int = 0
    hold_sparsity: bool = False    # recovery rounds after pruning: clients keep pruned weights at zero
    job: str = ""                  # "" = federated training; else an export job (see server/jobs.py)
    job_dir: str = ""              # the job's request and result files, on the coordinator
    secagg_max_weight: float = 10000.0
    secagg_clipping_range: float = 8.0

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {self.num_rounds}")
        if not 0 <= self.start_round <= self.num_rounds:
            raise ValueError(f"start_round must be in [0, {self.num_rounds}], got {self.start_round}")
        if self.min_clients < 1:
            raise ValueError(f"min_clients must be >= 1, got {self.min_clients}")
        if self.secagg and self.min_clients < 2:
            raise ValueError("secure aggregation needs min_clients >= 2")
        if self.round_timeout <= 0 or self.wait_clients_timeout <= 0:
            raise ValueError("timeouts must be > 0")

    @property
    def freeze_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.freeze.split(",") if p.strip())

    def to_flower(self) -> dict[str, int | float | str | bool]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_flower(cls, cfg: dict) -> "RunConfig":
        types = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for key, value in cfg.items():
            name = key.replace("-", "_")
            if name in types:
                kwargs[name] = {"int": int, "float": float, "bool": bool, "str": str}[types[name]](value)
        return cls(**kwargs)

    def with_(self, **changes) -> "RunConfig":
        return replace(self, **changes)
