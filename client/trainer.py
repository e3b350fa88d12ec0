"""What a customer's ClientApp does with a message: train or evaluate on local data. Only model arrays and
scalar metrics leave this function; the data never does."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.client import NumPyClient

from fedge.client.ledger import Budget, Ledger
from fedge.client.privacy_guard import plan_round, refusal
from fedge.core.tasks import Dataset, Task, get_task, split_holdout
from fedge.core.tasks.data import concat
from fedge.core.tasks.training import TrainConfig, evaluate, exchanged_names, get_arrays, set_arrays, train, train_dpsgd
from fedge.core.wire import FitKey, MetricKey, TaskKey


@dataclass(frozen=True)
class NodeSettings:
    """Per-customer settings, from the SuperNode's ``--node-config`` (set by ``fedge client start``)."""

    name: str
    task: str
    data_path: str = ""  # deployment: the customer's private data file
    more_data: tuple[str, ...] = ()  # more files trained on beside it (e.g. corrections.csv from the devices)
    partition_id: int = -1  # simulation: a Dirichlet partition of the task's reference data
    num_partitions: int = 0
    alpha: float = 0.0  # <= 0 -> IID
    holdout: float = 0.2
    state_dir: str = ""  # the daemon's state dir: the privacy ledger lives there
    max_epsilon: float = 0.0  # the customer's own privacy limit (0: none)
    delta: float = 1e-5
    base_model: str = ""  # text task: this customer's copy of the base ("" = the default location)

    @classmethod
    def from_node_config(cls, nc: dict) -> NodeSettings:
        if "data-path" in nc:
            return cls(
                name=str(nc.get("name", "customer")),
                task=str(nc["task"]),
                data_path=str(nc["data-path"]),
                more_data=tuple(p for p in str(nc.get("more-data", "")).split(os.pathsep) if p),
                state_dir=str(nc.get("state-dir", "")),
                max_epsilon=float(nc.get("max-epsilon", 0.0)),
                delta=float(nc.get("delta", 1e-5)),
                base_model=str(nc.get("base-model", "")),
            )
        pid = int(nc["partition-id"])
        return cls(
            name=f"sim-{pid}",
            task=str(nc.get("task", "digits")),
            partition_id=pid,
            num_partitions=int(nc["num-partitions"]),
            alpha=float(nc.get("alpha", 0.0)),
            base_model=str(nc.get("base-model", "")),
        )

    def build_task(self, config: dict) -> Task:
        """The run's task as this customer builds it: the run's settings (labels, LoRA, the base's identity, all
        from the message's ``config``) over this customer's own copy of the base. A task other than this
        customer's, or a base that differs from the run's, raises (the round fails for this customer, with why)."""
        if config.get(FitKey.TASK, self.task) != self.task:
            raise ValueError(f"run is for task {config[FitKey.TASK]!r} but customer {self.name!r} serves {self.task!r}")
        return get_task(self.task, {k: config[k] for k in TaskKey.ALL if k in config}, base_dir=self.base_model)

    def load(self, task: Task) -> tuple[Dataset, Dataset]:
        """-> (train, holdout), deterministic for a given file or partition. With several files each is split on
        its own, so each file's holdout stays the same whatever is added beside it."""
        if self.more_data:
            files = self.holdouts(task)
            pad = int(getattr(task, "pad_id", 0))
            return concat([t for t, _ in files.values()], pad), concat([h for _, h in files.values()], pad)
        if self.data_path:
            ds = task.load_data(Path(self.data_path))
        else:
            from fedge.core.tasks.partition import partition

            parts = partition(task.reference_data(), self.num_partitions, self.alpha if self.alpha > 0 else None)
            ds = parts[self.partition_id]
        return split_holdout(ds, self.holdout)

    def holdouts(self, task: Task) -> dict[str, tuple[Dataset, Dataset]]:
        """(train, holdout) of the ``original`` data file and of the files ``added`` beside it (none: only
        ``original``): the export's forgetting guard evaluates on each apart."""
        if not self.more_data:
            return {"original": self.load(task)}
        first = split_holdout(task.load_data(Path(self.data_path)), self.holdout)
        more = [split_holdout(task.load_data(Path(p)), self.holdout) for p in self.more_data]
        pad = int(getattr(task, "pad_id", 0))
        return {"original": first, "added": (concat([t for t, _ in more], pad), concat([h for _, h in more], pad))}


class FedgeClient(NumPyClient):
    def __init__(self, settings: NodeSettings) -> None:
        torch.set_num_threads(1)  # one message's training per process; several customers may share a host
        self.settings = settings

    @classmethod
    def from_context(cls, context) -> FedgeClient:
        return cls(NodeSettings.from_node_config(dict(context.node_config)))

    @staticmethod
    def _model(task: Task, parameters: list[np.ndarray]) -> torch.nn.Module:
        model = task.build_model()
        set_arrays(model, list(model.state_dict()), parameters)
        return model

    def fit(self, parameters, config):
        task = self.settings.build_task(config)
        train_ds, holdout = self.settings.load(task)
        model = self._model(task, parameters)
        metrics: dict = {MetricKey.CUSTOMER: self.settings.name}
        if config.get(FitKey.EVALUATE_INCOMING, False):
            loss, acc = evaluate(model, holdout)
            metrics |= {
                MetricKey.EVAL_LOSS: float(loss),
                MetricKey.EVAL_ACCURACY: float(acc),
                MetricKey.EVAL_EXAMPLES: len(holdout),
            }
        freeze = tuple(p for p in str(config.get(FitKey.FREEZE, "")).split(",") if p)
        cfg = TrainConfig(
            epochs=int(config[FitKey.LOCAL_EPOCHS]),
            batch_size=int(config[FitKey.BATCH_SIZE]),
            lr=float(config[FitKey.LR]),
            seed=int(config.get(FitKey.SEED, 0)) + int(config.get(FitKey.ROUND, 0)),
            proximal_mu=float(config.get(FitKey.PROXIMAL_MU, 0.0)),
        )
        ledger, budget = self._ledger()
        cost = plan_round(config, ledger, self.settings.delta, len(train_ds), cfg.batch_size, cfg.epochs)
        why = refusal(cost, ledger, budget)
        if why is not None:  # nothing is trained; the unchanged model goes back with weight 0
            if ledger is not None:
                ledger.append({**cost.ledger_body(), "refused": why})
            return get_arrays(model, exchanged_names(model, freeze)), 0, metrics | {MetricKey.REFUSED: why}
        masks = None
        if config.get(FitKey.HOLD_SPARSITY, False):  # recovery after pruning: zeros stay zeros
            masks = task.hold_masks(model)
        if cost.mechanism == "dp-sgd":
            res = train_dpsgd(model, train_ds, cfg, cost.noise, cost.clip, freeze=freeze, masks=masks)
            loss = res.loss
            if [res.noise_multiplier, res.sample_rate, res.steps] != cost.history[-1]:
                cost = cost.with_last_segment([res.noise_multiplier, res.sample_rate, res.steps])  # charge what ran
        else:
            loss = train(model, train_ds, cfg, freeze=freeze, masks=masks)
        if ledger is not None:
            ledger.append(cost.ledger_body())
        if cost.epsilon_run is not None:
            metrics |= {
                MetricKey.DP_MECHANISM: cost.mechanism,
                MetricKey.DP_EPSILON: float(cost.epsilon_run),
                MetricKey.DP_DELTA: cost.delta,
                MetricKey.DP_NOISE: float(cost.noise),
            }
        names = exchanged_names(model, freeze)
        arrays = get_arrays(model, names)
        # under central DP every customer weighs the same, so one customer moves the average by at most C / n
        weight = 1 if float(config.get(FitKey.DP_NOISE, 0.0)) > 0 else len(train_ds)
        return (
            arrays,
            weight,
            metrics | {MetricKey.TRAIN_LOSS: float(loss), MetricKey.SENT_BYTES: int(sum(a.nbytes for a in arrays))},
        )

    def _ledger(self) -> tuple[Ledger | None, Budget | None]:
        if not self.settings.state_dir:
            return None, None
        budget = Budget(self.settings.max_epsilon, self.settings.delta) if self.settings.max_epsilon > 0 else None
        return Ledger(Path(self.settings.state_dir)), budget

    def evaluate(self, parameters, config):
        task = self.settings.build_task(config)
        _, holdout = self.settings.load(task)
        loss, acc = evaluate(self._model(task, parameters), holdout)
        return float(loss), len(holdout), {MetricKey.CUSTOMER: self.settings.name, MetricKey.ACCURACY: float(acc)}
