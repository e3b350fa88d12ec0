"""Global-model checkpoints: safetensors files plus their sha256, written once and never modified."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedge.edge_runtime.distribution.bundle import sha256_file  # one file hash for checkpoints and bundles

__all__ = ["load_checkpoint", "save_checkpoint", "sha256_file"]


def save_checkpoint(path: Path, state: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """Atomically write ``state`` (full model state_dict as numpy) and return the file's sha256."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return sha256_file(path)


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
