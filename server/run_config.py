"""The run configuration: one frozen dataclass that travels as Flower's run config (hyphenated keys).

It is also the single source of the FAB's ``[tool.flwr.app.config]`` defaults, since Flower accepts
overrides only for keys declared there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from fedge.core.wire import TaskKey
from fedge.edge_runtime.common.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    fedge_run_id: int = 0
    state_dir: str = ""
    task: str = "digits"
    num_rounds: int = 3  # total planned rounds of the fedge run
    start_round: int = 0  # last completed round; > 0 when resuming
    min_clients: int = 2  # fewer surviving clients in a round -> the run fails
    local_epochs: int = -1  # -1: the task's default
    batch_size: int = -1
    lr: float = -1.0
    proximal_mu: float = -1.0  # FedProx's proximal term in local training; -1: the task's default, 0: FedAvg
    secagg: bool = True
    round_timeout: float = 120.0  # seconds to wait for replies in each message exchange
    wait_clients_timeout: float = 120.0  # seconds to wait for min_clients to be connected
    max_round_attempts: int = 3  # a halted SecAgg+ round is retried this many times
    init: str = ""  # checkpoint to start from (fine-tuning); "" = fresh model
    freeze: str = ""  # comma-separated fnmatch patterns of parameters kept frozen
    seed: int = 0
    hold_sparsity: bool = False  # recovery rounds after pruning: clients keep pruned weights at zero
    job: str = ""  # "" = federated training; else an export job (see server/jobs.py)
    job_dir: str = ""  # the job's request and result files, on the coordinator
    secagg_max_weight: float = 10000.0
    secagg_clipping_range: float = 8.0
    dp_noise: float = 0.0  # central DP: noise multiplier on the aggregate (0: off)
    dp_clip: float = 0.0  # central DP: customers clip their update to this L2 norm (initial, if adaptive)
    dp_adaptive: bool = False  # central DP: the clip follows a quantile of the update norms (Andrew et al.)
    dp_target_quantile: float = 0.5  # adaptive clipping: the fraction of updates meant to fit under the clip
    dp_delta: float = 1e-5  # δ at which the run's ε is reported
    dp_sgd: bool = False  # sample-level DP-SGD (Opacus) in every customer's training
    dp_sgd_noise: float = 0.0  # DP-SGD noise multiplier (or derive it from dp_sgd_epsilon)
    dp_sgd_clip: float = 1.0  # DP-SGD per-sample gradient bound
    dp_sgd_epsilon: float = 0.0  # DP-SGD target ε over the planned rounds (each customer derives its noise)
    aggregator: str = "fedavg"  # fedavg | median | trimmed-mean | krum (robust ones need secagg off)
    max_update_norm: float = 0.0  # reject updates farther than this (L2) from the global model; 0: no bound
    labels: str = ""  # the run's label catalogue, a JSON list; "": the task's own
    base_model: str = ""  # text task: the coordinator's copy of the base (a Hugging Face model directory)
    base_sha256: str = ""  # text task: the base's identity; every customer's copy must match it
    lora_r: int = 8  # text task: LoRA rank, scaling and target modules
    lora_alpha: int = 16
    lora_targets: str = "query,value"
    prune: str = ""  # text task: train under this sparsity mask (fedge export's recovery rounds)
    sim_alpha: float = 0.0  # fedge simulate: Dirichlet alpha of the virtual customers' label skew (<= 0: IID)
    from_release: int = 0  # --from-release: the run starts from this release's weights (server/from_release.py)
    init_labels: str = ""  # the starting checkpoint's catalogue (JSON list) when the run's extends it
    max_forgetting: float = 0.01  # its export's forgetting guard, unless fedge export --max-forgetting says

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ConfigError(f"num_rounds must be >= 1, got {self.num_rounds}")
        if not 0 <= self.max_forgetting <= 1 or self.from_release < 0:
            raise ConfigError("--max-forgetting must be in [0, 1] and --from-release a release id")
        if not 0 <= self.start_round <= self.num_rounds:
            raise ConfigError(f"start_round must be in [0, {self.num_rounds}], got {self.start_round}")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1, got {self.min_clients}")
        if self.secagg and self.min_clients < 2:
            raise ConfigError("secure aggregation needs min_clients >= 2")
        if self.round_timeout <= 0 or self.wait_clients_timeout <= 0:
            raise ConfigError("timeouts must be > 0")
        if self.dp_noise < 0 or (self.dp_noise > 0 and self.dp_clip <= 0):
            raise ConfigError("central DP needs --dp-noise SIGMA >= 0 and, when on, --dp-clip C > 0")
        if self.dp_adaptive and self.dp_noise <= 0:
            raise ConfigError("--dp-adaptive adapts central DP's clip: it needs --dp-noise SIGMA > 0 and --dp-clip C")
        if not 0 < self.dp_target_quantile < 1:
            raise ConfigError(f"--dp-target-quantile must be in (0, 1), got {self.dp_target_quantile}")
        if self.dp_noise > 0 and self.freeze:
            raise ConfigError("central DP clips whole-model updates: it cannot be combined with --freeze")
        if self.dp_sgd and self.dp_sgd_noise <= 0 and self.dp_sgd_epsilon <= 0:
            raise ConfigError("--dp-sgd needs --dp-sgd-noise SIGMA or --dp-sgd-epsilon E")
        if self.proximal_mu < 0 and self.proximal_mu != -1:
            raise ConfigError(f"--proximal-mu must be >= 0, got {self.proximal_mu}")
        if self.dp_sgd and self.proximal_mu > 0:
            raise ConfigError(
                "--proximal-mu cannot be combined with --dp-sgd: Opacus steps on the clipped, noised"
                " gradients of the data loss alone, so the proximal term would be dropped"
            )
        if not 0 < self.dp_delta < 1 or self.dp_sgd_clip <= 0:
            raise ConfigError("need 0 < --delta < 1 and --dp-sgd-clip > 0")
        if self.lora_r < 1 or self.lora_alpha < 1 or not self.lora_targets.strip(","):
            raise ConfigError("need --lora-r >= 1, --lora-alpha >= 1 and at least one --lora-targets module")
        from fedge.core.tasks import parse_labels
        from fedge.core.tasks.sparsity import PruneConfig
        from fedge.server.robust import AGGREGATORS

        PruneConfig.parse(self.prune)
        labels = parse_labels(self.labels)
        if len(set(labels)) != len(labels) or (self.labels and len(labels) < 2):
            raise ConfigError(f"--labels: a catalogue needs at least two distinct labels, got {list(labels)}")

        if self.aggregator not in AGGREGATORS:
            raise ConfigError(f"--aggregator must be one of {AGGREGATORS}, got {self.aggregator!r}")
        if self.aggregator != "fedavg" and self.secagg:
            raise ConfigError(
                f"--aggregator {self.aggregator} needs individual updates: use it with --no-secagg"
                " (under SecAgg+ bound updates with --dp-clip instead)"
            )

    def task_settings(self) -> dict[str, str | int]:
        """What customers need to build the run's task (fedge.core.wire.TaskKey), sent with every message."""
        return {
            TaskKey.LABELS: self.labels,
            TaskKey.BASE_SHA256: self.base_sha256,
            TaskKey.LORA_R: self.lora_r,
            TaskKey.LORA_ALPHA: self.lora_alpha,
            TaskKey.LORA_TARGETS: self.lora_targets,
            TaskKey.PRUNE: self.prune,
        }

    def make_task(self):
        """The run's task, configured as the run says (the coordinator's side: its own copy of the base)."""
        from fedge.core.tasks import get_task

        return get_task(self.task, self.task_settings(), base_dir=self.base_model)

    @property
    def freeze_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.freeze.split(",") if p.strip())

    def with_task_defaults(self, defaults) -> RunConfig:
        """The task's training defaults (a ``TrainDefaults``) in place of every -1, so that the registry records
        what customers train with."""
        return replace(
            self,
            local_epochs=self.local_epochs if self.local_epochs >= 0 else defaults.local_epochs,
            batch_size=self.batch_size if self.batch_size > 0 else defaults.batch_size,
            lr=self.lr if self.lr > 0 else defaults.lr,
            proximal_mu=self.local_proximal_mu(defaults.proximal_mu),
        )

    def local_proximal_mu(self, task_default: float) -> float:
        """The proximal term customers train with: the flag's, else the task's (none under DP-SGD)."""
        return self.proximal_mu if self.proximal_mu >= 0 else 0.0 if self.dp_sgd else task_default

    def to_flower(self) -> dict[str, int | float | str | bool]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_flower(cls, cfg: dict) -> RunConfig:
        types = {f.name: str(f.type) for f in fields(cls)}  # annotations are strings here (__future__)
        kwargs = {}
        for key, value in cfg.items():
            name = key.replace("-", "_")
            if name in types:
                kwargs[name] = {"int": int, "float": float, "bool": bool, "str": str}[types[name]](value)
        return cls(**kwargs)

    def with_(self, **changes) -> RunConfig:
        return replace(self, **changes)
