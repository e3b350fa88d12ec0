"""What an ONNX model computes by the ONNX specification, independent of any CPU: ``onnx.reference``'s evaluator.
An INT8 model whose ONNX Runtime answers differ from these depends on the CPU that runs it (ONNX Runtime's x86
u8s8 kernels without VNNI saturate an int16 intermediate; arm64 and VNNI CPUs do not), so the accuracy gate
compares the customers' runtime with it on a bounded sample.

onnx 1.23's reference evaluator has no DequantizeLinear for opset 17 (the release models' opset): the default
domain's import is raised to 19 in memory, which leaves every operator the export writes with the same meaning
(QuantizeLinear/DequantizeLinear 19 add float8 types and keep the int8 semantics)."""

from __future__ import annotations

import numpy as np

REFERENCE_OPSET = 19


def reference_session(model_bytes: bytes):
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load_from_string(model_bytes)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < REFERENCE_OPSET:
            imp.version = REFERENCE_OPSET
    return ReferenceEvaluator(model)


def reference_outputs(model_bytes: bytes, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The model's first output for ``x``, row batches at a time, as the ONNX specification computes it."""
    session = reference_session(model_bytes)
    name = session.input_names[0]
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])
