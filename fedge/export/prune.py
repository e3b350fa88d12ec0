"""Stage: pruning. ``2:4`` keeps the 2 largest |w| in every group of 4 consecutive input weights of each Linear
and Conv (the pattern TensorRT's sparse kernels use on Ampere/Orin; conv groups run along input channels in
KRSC order), ``unstructured:P`` zeroes the fraction P of smallest |w|, ``none`` does nothing. The pruning
re-parametrisation is removed before export, so the weights themselves carry the zeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from fedge.core.tasks.sparsity import PruneConfig, check_2of4, mask_2of4

__all__ = ["PruneConfig", "SparsityReport", "check_2of4", "mask_2of4", "prunable", "prune_model", "sparsity"]


@dataclass(frozen=True)
class SparsityReport:
    pattern: str
    parameters: int
    zeros: int
    layers: dict[str, float]  # prunable weight -> fraction of zeros

    def to_json(self) -> dict:
        return {
            "pattern": self.pattern,
            "parameters": self.parameters,
            "zeros": self.zeros,
            "fraction": self.zeros / max(self.parameters, 1),
            "layers": self.layers,
        }


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def prune_model(model: nn.Module, cfg: PruneConfig) -> dict[str, torch.Tensor]:
    """Prune in place and bake the zeros into the weights; returns {param name: mask} for recovery rounds."""
    masks: dict[str, torch.Tensor] = {}
    if cfg.method == "none":
        return masks
    for name, module in prunable(model):
        if cfg.method == "2:4":
            tprune.custom_from_mask(module, "weight", mask_2of4(cast(torch.Tensor, module.weight)))
        else:
            tprune.l1_unstructured(module, "weight", amount=cfg.amount)
        masks[f"{name}.weight"] = cast(torch.Tensor, module.weight_mask).detach().clone()
        tprune.remove(module, "weight")
    return masks


def sparsity(model: nn.Module, pattern: str) -> SparsityReport:
    layers, total, zeros = {}, 0, 0
    for name, p in model.named_parameters():
        total += p.numel()
        z = int((p == 0).sum())
        zeros += z
        if name.endswith("weight") and p.dim() > 1:
            layers[name] = z / p.numel()
    return SparsityReport(pattern, total, zeros, layers)
