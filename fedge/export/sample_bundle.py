"""A signed release bundle of an untrained task model (FP32 only), written with the same ``write_bundle`` as a
real export: for tests and benchmarks that need a servable model without running a federation."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from fedge.edge_runtime.distribution.bundle import load_private_key, write_bundle
from fedge.core.tasks import get_task

from fedge.export.onnx_export import to_onnx


def untrained_bundle(out: Path, key_path: Path, task_name: str = "digits", model_name: str | None = None,
                     seed: int = 0, max_batch_size: int = 64) -> Path:
    task = get_task(task_name)
    torch.manual_seed(seed)
    model = task.build_model()
    spec = task.input_spec()
    sample = np.zeros((2, *spec.shape[1:]), dtype=np.float32 if spec.datatype == "FP32" else np.int64)
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    to_onnx(model, sample, out / "model.fp32.onnx")
    return sign_bundle(out, key_path, task_name, model_name, seed, max_batch_size)


def sign_bundle(out: Path, key_path: Path, task_name: str, model_name: str | None = None, seed: int = 0,
                max_batch_size: int = 64, models: dict[str, str] | None = None) -> Path:
    """Sign ``out`` as a bundle of the task's model: ``models`` (kind -> file in ``out``, by default only
    ``model.fp32.onnx``) with the task's input and logits output."""
    task = get_task(task_name)
    spec = task.input_spec()
    fields = {
        "model": model_name or task_name, "task": task_name,
        "inputs": [{"name": "input", "datatype": spec.datatype, "shape": list(spec.shape)}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, task.num_classes]}],
        "models": models or {"fp32": "model.fp32.onnx"}, "labels": list(task.labels),
        "preprocessing": task.preprocessing(), "max_batch_size": max_batch_size,
        "lineage": {"run": 0, "round": 0, "seed": seed},
    }
    write_bundle(out, fields, load_private_key(key_path))
    return out
