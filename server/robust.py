"""Robust aggregation on the coordinator (without SecAgg+, where individual updates are visible):

* screening: an update with NaN/Inf, or whose L2 distance from the global model exceeds ``max_update_norm``,
  is rejected before aggregation and counted in the round record;
* ``--aggregator median|trimmed-mean|krum`` selects Flower's robust aggregation functions instead of FedAvg.
"""

from __future__ import annotations

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError

AGGREGATORS = ("fedavg", "median", "trimmed-mean", "krum")


def screen(
    update: list[np.ndarray], global_arrays: list[np.ndarray] | None, max_norm: float
) -> tuple[str | None, float | None]:
    """(why ``update`` must not be aggregated or None, its L2 norm from the global model when known)."""
    from fedge.core.privacy import update_norm

    for i, a in enumerate(update):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return f"tensor {i} holds NaN/Inf", None
    if global_arrays is None:
        return None, None
    if len(update) != len(global_arrays):
        return f"{len(update)} tensors, the model has {len(global_arrays)}", None
    norm = update_norm(update, global_arrays)
    if max_norm > 0 and norm > max_norm:
        return f"update L2 norm {norm:.3g} exceeds the bound {max_norm:g}", norm
    return None, norm


def robust_aggregate(
    name: str, updates: list[list[np.ndarray]], weights: list[int], trim: float = 0.2, num_malicious: int = 1
) -> list[np.ndarray]:
    from flwr.server.strategy.aggregate import aggregate_krum, aggregate_median, aggregate_trimmed_avg

    pairs = list(zip(updates, weights))
    if name == "median":
        out = aggregate_median(pairs)
    elif name == "trimmed-mean":
        out = aggregate_trimmed_avg(pairs, trim)
    elif name == "krum":
        out = aggregate_krum(pairs, num_malicious, to_keep=0)
    else:
        raise ConfigError(f"unknown aggregator {name!r}; choose from {AGGREGATORS}")
    return [np.asarray(a, dtype=u.dtype) for a, u in zip(out, updates[0])]
