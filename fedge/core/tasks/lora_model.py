"""The ``text`` task's torch modules: a (peft) encoder with LoRA adapters and a linear head over the mean-pooled
output, whose ``state_dict`` holds the trainable arrays only, and the merged form the export writes to ONNX.
Built by fedge.core.tasks.encoder.build_classifier; imported only where torch is."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, cast

import torch
import torch.nn as nn


def trim_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the columns that are padding in every row (rows are right-padded)."""
    if ids.ndim != 2 or ids.shape[1] == 0:
        return ids
    real = (ids != pad_id).any(dim=0)
    keep = int(real.nonzero().max().item()) + 1 if bool(real.any()) else 1
    return ids[:, :keep] if keep < ids.shape[1] else ids


class PooledClassifier(nn.Module):
    """ids (N, L) int64 -> logits (N, C): attention mask from the pad id, encoder, mean pool, head."""

    def __init__(self, encoder: nn.Module, head: nn.Linear, pad_id: int) -> None:
        super().__init__()
        self.encoder, self.head, self.pad_id = encoder, head, pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            ids = trim_padding(ids, self.pad_id)  # eager: pay only for this batch's longest row
        mask = (ids != self.pad_id).to(torch.int64)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class TextClassifier(PooledClassifier):
    """The trainable form: a peft encoder (frozen base + LoRA) whose state is the adapters and the head."""

    def __init__(self, peft_encoder: nn.Module, head: nn.Linear, pad_id: int) -> None:
        super().__init__(peft_encoder, head, pad_id)
        self.masks: dict[str, torch.Tensor] = {}  # sparsity masks the merged weights hold (hold_mask)
        trainable = set(self.trainable_names())
        for name, p in self.named_parameters():
            p.requires_grad_(name in trainable)

    def trainable_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if "lora_" in n or n.startswith("head.")]

    def state_dict(self, *args, **kwargs):
        full = super().state_dict(*args, **kwargs)
        keep = set(self.trainable_names())
        return OrderedDict((k, v) for k, v in full.items() if k in keep)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        expected = set(self.trainable_names())
        unexpected, missing = set(state_dict) - expected, expected - set(state_dict)
        if strict and (unexpected or missing):
            raise RuntimeError(f"text model state: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def merged(self) -> PooledClassifier:
        """A plain module (ids -> logits) with the adapters merged into the base's weights: what is exported."""
        clone = copy.deepcopy(self)
        encoder = cast(Any, clone.encoder).merge_and_unload()  # a peft model
        with torch.no_grad():
            for name, mask in self.masks.items():  # W + scaling * B @ A under the mask: what training computed
                encoder.get_submodule(name).weight.mul_(mask)
        return PooledClassifier(encoder, clone.head, self.pad_id)


def hold_mask(model: TextClassifier, cfg) -> dict[str, torch.Tensor]:
    """Train and export ``model`` under a sparsity mask (a fedge.core.tasks.sparsity.PruneConfig) on every Linear
    of its encoder, computed from the frozen base's weights (so every party derives the same mask from its own copy):
    a LoRA-adapted layer computes with ``mask * (W + scaling * B @ A)``, the merged weight the release ships; a
    plain layer's weight is masked in place. -> {encoder module name (as after merging): mask}."""
    import types

    from fedge.core.tasks.sparsity import mask_for

    masks = {}
    for name, module in model.encoder.named_modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, nn.Linear) and hasattr(module, "lora_A"):
            mask = mask_for(base.weight, cfg)
            module.forward = types.MethodType(_masked_lora_forward, module)
            module.fedge_mask = mask
        elif isinstance(module, nn.Linear) and "layer." in name and not _inside_lora(name):
            mask = mask_for(module.weight, cfg)
            with torch.no_grad():
                module.weight.mul_(mask)
        else:
            continue
        masks[_merged_name(name)] = mask
    model.masks = masks
    return masks


def _inside_lora(name: str) -> bool:
    return name.endswith("base_layer") or ".lora_" in name


def _merged_name(peft_name: str) -> str:
    """A module's name in the peft model -> its name after merge_and_unload."""
    return peft_name.removeprefix("base_model.model.")


def _masked_lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    (adapter,) = self.active_adapters
    delta = (self.lora_B[adapter].weight @ self.lora_A[adapter].weight) * self.scaling[adapter]
    return nn.functional.linear(x, self.fedge_mask * (self.base_layer.weight + delta), self.base_layer.bias)
