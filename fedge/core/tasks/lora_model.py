"""The ``text`` task's torch modules: a (peft) encoder with LoRA adapters and a linear head over the mean-pooled
output, whose ``state_dict`` holds the trainable arrays only, and the merged form the export writes to ONNX.
Built by fedge.core.tasks.encoder.build_classifier; imported only where torch is."""
from __future__ import annotations

import copy
from collections import OrderedDict

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
        return PooledClassifier(clone.encoder.merge_and_unload(), clone.head, self.pad_id)
