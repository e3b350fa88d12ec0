"""Stage: PyTorch model -> single-file FP32 ONNX (opset 17, dynamic batch axis), checked with onnx.checker and
against PyTorch on seeded inputs."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPSET = 17
INPUT, OUTPUT = "input", "logits"
AXIS_NAMES = {0: "batch", 1: "sequence"}


class ParityError(AssertionError):
    pass


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    top1_agreement: float


def to_onnx(model, sample: np.ndarray, path: Path, dynamic_axes: Sequence[int] = (0,)) -> Path:
    """Export ``model`` for inputs shaped like ``sample`` (N, ...) with dynamic axes (default: the batch axis)."""
    import onnx
    import torch

    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.from_numpy(sample),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {i: AXIS_NAMES.get(i, f"dim{i}") for i in dynamic_axes}, OUTPUT: {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def check_parity(model, onnx_path: Path, x: np.ndarray, atol: float = 1e-4) -> Parity:
    """ONNX Runtime vs PyTorch on the same inputs: shape, dtype, then closeness; raises ParityError."""
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT: x})[0]
    if got.shape != ref.shape or got.dtype != ref.dtype:
        raise ParityError(f"onnx fp32: output {got.shape} {got.dtype}, torch gives {ref.shape} {ref.dtype}")
    diff = float(np.abs(got - ref).max())
    if diff > atol:
        raise ParityError(f"onnx fp32: max |diff| {diff:.2e} vs torch exceeds {atol:.0e}")
    return Parity(diff, float((got.argmax(1) == ref.argmax(1)).mean()))
