"""Stage: pruning. ``2:4`` keeps the 2 largest |w| in every group of 4 consecutive input weights of each Linear
and Conv (the pattern TensorRT's sparse kernels use on Ampere/Orin; conv groups run along input channels in
KRSC order), ``unstructured:P`` zeroes the fraction P of smallest |w|, ``none`` does nothing. The pruning
re-parametrisation is removed before export, so the weights themselves carry the zeros."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune


@dataclass(frozen=True)
class PruneConfig:
    method: str = "none"      # none | 2:4 | unstructured
    amount: float = 0.0       # unstructured only

    @classmethod
    def parse(cls, spec: str) -> "PruneConfig":
        if spec in ("none", ""):
            return cls()
        if spec == "2:4":
            return cls("2:4", 0.5)
        if spec.startswith("unstructured:"):
            amount = float(spec.split(":", 1)[1])
            if not 0 < amount < 1:
                raise ValueError(f"--prune unstructured:P needs 0 < P < 1, got {amount}")
            return cls("unstructured", amount)
        raise ValueError(f"unknown --prune {spec!r}: use none, 2:4 or unstructured:P")


@dataclass(frozen=True)
class SparsityReport:
    pattern: str
    parameters: int
    zeros: int
    layers: dict[str, float]     # prunable weight -> fraction of zeros

    def to_json(self) -> dict:
        return {"pattern": self.pattern, "parameters": self.parameters, "zeros": self.zeros,
                "fraction": self.zeros / max(self.parameters, 1), "layers": self.layers}


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def mask_2of4(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *k) -> 0/1 mask keeping the 2 largest |w| of each 4 consecutive input weights (input channels
    innermost, KRSC order for convs; the reduction axis is zero-padded to a multiple of 4)."""
    w = weight.detach()
    rows = w.movedim(1, -1).reshape(w.shape[0], -1)                       # (out, k... * in) with in innermost
    pad = (-rows.shape[1]) % 4
    padded = torch.nn.functional.pad(rows.abs(), (0, pad))
    groups = padded.reshape(rows.shape[0], -1, 4)                         # (out, G, 4)
    keep = torch.zeros_like(groups)
    keep.scatter_(2, groups.topk(2, dim=2).indices, 1.0)
    keep = keep.reshape(rows.shape[0], -1)[:, : rows.shape[1]]
    return keep.reshape(w.movedim(1, -1).shape).movedim(-1, 1).contiguous()


def prune_model(model: nn.Module, cfg: PruneConfig) -> dict[str, torch.Tensor]:
    """Prune in place and bake the zeros into the weights; returns {param name: mask} for recovery rounds."""
    masks: dict[str, torch.Tensor] = {}
    if cfg.method == "none":
        return masks
    for name, module in prunable(model):
        if cfg.method == "2:4":
            tprune.custom_from_mask(module, "weight", mask_2of4(module.weight))
        else:
            tprune.l1_unstructured(module, "weight", amount=cfg.amount)
        masks[f"{name}.weight"] = module.weight_mask.detach().clone()
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


def check_2of4(weight: torch.Tensor) -> float:
    """Fraction of input-weight groups of 4 holding at most 2 non-zeros (1.0 = the whole tensor is 2:4)."""
    rows = weight.detach().movedim(1, -1).reshape(weight.shape[0], -1)
    rows = torch.nn.functional.pad(rows, (0, (-rows.shape[1]) % 4))
    nonzero = (rows.reshape(rows.shape[0], -1, 4) != 0).sum(dim=2)
    return float((nonzero <= 2).float().mean())
