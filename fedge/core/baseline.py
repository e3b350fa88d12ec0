"""Centralized training on the same split the customers hold: the reference a federated run is judged against."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedge.core.tasks import Dataset, Task, split_holdout


def union(parts: list[Dataset]) -> Dataset:
    return Dataset(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))


def centralized_accuracy(task: Task, data_files: list[Path], epochs: int, seed: int = 0) -> float:
    """Train on the union of the customers' training splits, evaluate on the union of their holdouts."""
    import torch

    from fedge.core.tasks.training import TrainConfig, evaluate, train

    splits = [split_holdout(task.load_data(Path(f))) for f in data_files]
    torch.manual_seed(seed)
    model = task.build_model()
    d = task.defaults
    train(model, union([s[0] for s in splits]), TrainConfig(epochs=epochs, batch_size=d.batch_size, lr=d.lr, seed=seed))
    return evaluate(model, union([s[1] for s in splits]))[1]
