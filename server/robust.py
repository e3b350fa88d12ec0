"""Robust aggregation on the coordinator (without SecAgg+, where individual updates are visible):

* screening: an update with NaN/Inf, or whose L2 distance from the global model exceeds ``max_update_norm``,
  is rejected before aggregation and counted in the round record;
* ``--aggregator median|trimmed-mean|krum`` selects Flower's robust aggregation functions instead of FedAvg.
"""
from __future__ import annotations

import numpy as np

AGGREGATORS = ("fedavg", "median", "trimmed-mean", "krum")


def update_norm(update: list[np.ndarray], global_arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum((u.astype(np.float64) - g) ** 2)) for u, g in zip(update, global_arrays))))


def screen(update: list[np.ndarray], global_arrays: list[np.ndarray] | None, max_norm: float) -> str | None:
    """Why ``update`` must not be aggregated, or None."""
    for i, a in enumerate(update):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return f"tensor {i} holds NaN/Inf"
    if global_arrays is not None and len(update) != len(global_arrays):
        return f"{len(update)} tensors, the model has {len(global_arrays)}"
    if max_norm > 0 and global_arrays is not None:
        norm = update_norm(update, global_arrays)
        if norm > max_norm:
            return f"update L2 norm {norm:.3g} exceeds the bound {max_norm:g}"
    return None


def robust_aggregate(name: str, updates: list[list[np.ndarray]], weights: list[int], trim: float = 0.2,
                     num_malicious: int = 1) -> list[np.ndarray]:
    from flwr.server.strategy.aggregate import aggregate_krum, aggregate_median, aggregate_trimmed_avg

    pairs = list(zip(updates, weights))
    if name == "median":
        out = aggregate_median(pairs)
    elif name == "trimmed-mean":
        out = aggregate_trimmed_avg(pairs, trim)
    elif name == "krum":
        out = aggregate_krum(pairs, num_malicious, to_keep=0)
    else:
        raise ValueError(f"unknown aggregator {name!r}; choose from {AGGREGATORS}")
    return [np.asarray(a, dtype=u.dtype) for a, u in zip(out, updates[0])]
