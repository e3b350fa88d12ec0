"""Release bundles made in tests (the export pipeline makes the real ones with the same write_bundle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedge.export.sample_bundle import untrained_bundle as make_bundle  # noqa: F401  (the tests' name for it)


def reference_logits(bundle: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(bundle / "model.fp32.onnx")).run(None, {"input": x})[0]


def heavy_bundle(out: Path, key_path: Path, layers: int = 200, width: int = 1024) -> Path:
    """A signed bundle named "digits" (the digits model's input and output) whose model is ``layers`` matrix
    products of ``width``: a stand-in for a heavy model in a server process (about 4 ms per row per 100 layers on
    one core here), in a 4.5 MB file since every layer shares one weight."""
    import shutil

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fedge.export.sample_bundle import sign_bundle

    rng = np.random.default_rng(0)
    weights = {
        "shape": np.array([-1, 64], np.int64),
        "w_in": (rng.standard_normal((64, width)) / 8).astype(np.float32),
        "w": (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
        "w_out": (rng.standard_normal((width, 10)) / np.sqrt(width)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w_in"], ["h0"]),
    ]
    for i in range(layers):
        nodes += [
            helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]),
        ]
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "w_out"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # IR 8, as the export writes: helper.make_model would stamp the newest IR, which older ONNX Runtimes refuse
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), out / "model.fp32.onnx"
    )
    return sign_bundle(out, key_path, "digits")
