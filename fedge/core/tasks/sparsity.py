"""Sparsity patterns shared by the export's pruning stage (fedge.export.prune) and the text task, which trains
under a mask on its encoder's weights: ``2:4`` keeps the 2 largest |w| in every group of 4 consecutive input
weights (the pattern TensorRT's sparse kernels use on Ampere/Orin), ``unstructured:P`` zeroes the fraction P of
smallest |w| of each layer, ``none`` does nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedge.edge_runtime.common.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by the callers that have it; the run config parses specs without it
    import torch


@dataclass(frozen=True)
class PruneConfig:
    method: str = "none"  # none | 2:4 | unstructured
    amount: float = 0.0  # unstructured only

    @classmethod
    def parse(cls, spec: str) -> PruneConfig:
        if spec in ("none", ""):
            return cls()
        if spec == "2:4":
            return cls("2:4", 0.5)
        if spec.startswith("unstructured:"):
            amount = float(spec.split(":", 1)[1])
            if not 0 < amount < 1:
                raise ConfigError(f"--prune unstructured:P needs 0 < P < 1, got {amount}")
            return cls("unstructured", amount)
        raise ConfigError(f"unknown --prune {spec!r}: use none, 2:4 or unstructured:P")


def mask_2of4(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *k) -> 0/1 mask keeping the 2 largest |w| of each 4 consecutive input weights (input channels
    innermost, KRSC order for convs; the reduction axis is zero-padded to a multiple of 4)."""
    import torch

    w = weight.detach()
    rows = w.movedim(1, -1).reshape(w.shape[0], -1)  # (out, k... * in) with in innermost
    pad = (-rows.shape[1]) % 4
    padded = torch.nn.functional.pad(rows.abs(), (0, pad))
    groups = padded.reshape(rows.shape[0], -1, 4)  # (out, G, 4)
    keep = torch.zeros_like(groups)
    keep.scatter_(2, groups.topk(2, dim=2).indices, 1.0)
    keep = keep.reshape(rows.shape[0], -1)[:, : rows.shape[1]]
    return keep.reshape(w.movedim(1, -1).shape).movedim(-1, 1).contiguous()


def mask_unstructured(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """0/1 mask zeroing the ``amount`` fraction of smallest |w| (as torch's l1_unstructured)."""
    import torch

    w = weight.detach().abs().reshape(-1)
    k = round(amount * w.numel())
    keep = torch.ones_like(w)
    if k:
        keep[w.topk(k, largest=False).indices] = 0.0
    return keep.reshape(weight.shape)


def mask_for(weight: torch.Tensor, cfg: PruneConfig) -> torch.Tensor:
    return mask_2of4(weight) if cfg.method == "2:4" else mask_unstructured(weight, cfg.amount)


def check_2of4(weight: torch.Tensor) -> float:
    """Fraction of input-weight groups of 4 holding at most 2 non-zeros (1.0 = the whole tensor is 2:4)."""
    import torch

    rows = weight.detach().movedim(1, -1).reshape(weight.shape[0], -1)
    rows = torch.nn.functional.pad(rows, (0, (-rows.shape[1]) % 4))
    nonzero = (rows.reshape(rows.shape[0], -1, 4) != 0).sum(dim=2)
    return float((nonzero <= 2).float().mean())
