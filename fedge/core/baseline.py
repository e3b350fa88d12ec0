"""Centralized training on the same split the customers hold: the reference a federated run is judged against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedge.core.tasks import Dataset, Task, split_holdout


def union(parts: list[Dataset]) -> Dataset:
    """The parts as one dataset; token ids padded to different lengths are right-padded with 0 to the longest."""
    xs = [p.x for p in parts]
    widths = {x.shape[1] for x in xs if x.ndim == 2 and x.dtype.kind == "i"}
    if len(widths) > 1:
        xs = [np.pad(x, ((0, 0), (0, max(widths) - x.shape[1]))) for x in xs]
    return Dataset(np.concatenate(xs), np.concatenate([p.y for p in parts]))


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
