"""Splitting public data across virtual customers: IID or Dirichlet non-IID over labels."""

from __future__ import annotations

import numpy as np

from fedge.core.tasks.data import Dataset
from fedge.edge_runtime.common.errors import ConfigError


def dirichlet_partition(
    y: np.ndarray, num_parts: int, alpha: float, seed: int = 0, min_size: int = 2
) -> list[np.ndarray]:
    """Index arrays, one per part. For each class, its samples are divided among parts in proportions drawn
    from Dirichlet(alpha): small alpha -> each customer sees few classes; large alpha -> close to IID.
    Redraws (bounded) until every part holds at least ``min_size`` samples."""
    if num_parts < 1 or alpha <= 0:
        raise ConfigError(f"need num_parts >= 1 and alpha > 0, got {num_parts}, {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_parts)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_parts, alpha))) * len(idx)).astype(int)[:-1]
            for p, chunk in enumerate(np.split(idx, cuts)):
                parts[p] += chunk.tolist()
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not give each of {num_parts} parts {min_size} samples with alpha={alpha}")


def partition(ds: Dataset, num_parts: int, alpha: float | None, seed: int = 0) -> list[Dataset]:
    """alpha=None -> IID round-robin after a seeded shuffle."""
    if alpha is None:
        order = np.random.default_rng(seed).permutation(len(ds))
        return [ds.take(np.sort(order[i::num_parts])) for i in range(num_parts)]
    return [ds.take(idx) for idx in dirichlet_partition(ds.y, num_parts, alpha, seed)]
