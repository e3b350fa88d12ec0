"""Stage: INT8 QDQ models from the merged calibration ranges, with ONNX Runtime's quantizer. Two files from the
same ranges:

* ``model.int8.trt.onnx`` for TensorRT's explicit quantization: int8 symmetric activations and weights (zero
  point 0), per-channel weight scales (axis 0 for Conv, the output axis for Gemm), float bias;
* ``model.int8.cpu.onnx`` for ONNX Runtime on CPUs: uint8 activations, which its x86 kernels run fully in integer
  (the signed variant leaves about half the convolutions in float there and is slower than FP32), and 7-bit
  weights (``reduce_range``: |w| <= 64). Without VNNI, ONNX Runtime's x86 u8s8 kernels add pairs of u8 x s8
  products in int16 (pmaddubsw), which saturates past 32767: 2 x 255 x 127 can, 2 x 255 x 64 = 32640 cannot. With
  7-bit weights every CPU (x86 with and without VNNI, arm64) computes what the ONNX specification says, so the
  federated gate measures the answers every device gives (measured: docs/BENCHMARKS.md, "INT8 on every CPU").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.edge_runtime.common.errors import ConfigError
from fedge.export.calibration import write_cache


@dataclass(frozen=True)
class QuantizeConfig:
    method: str = "minmax"

    def __post_init__(self) -> None:
        if self.method not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"unknown calibration method {self.method!r}")


# A model family's quantizer: (pre-processed FP32, calibration cache, ORT's calibration method, out dir) -> the
# INT8 files by variant ("int8_trt", "int8_cpu"). The export profiles (fedge.export.profiles) choose one.
Quantizer = Callable[[Path, Path, Any, Path], dict[str, Path]]


def preprocess(fp32: Path, out: Path, skip_symbolic_shape: bool = False) -> Path:
    """Shape inference + ORT's basic optimizations; calibration and quantization both run on this graph.
    ``skip_symbolic_shape``: ONNX Runtime's symbolic shape inference is skipped (ONNX's own still runs)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(out), skip_symbolic_shape=skip_symbolic_shape)
    return out


def quantize_variants(
    pre: Path,
    ranges: dict[str, tuple[float, float]],
    out_dir: Path,
    cfg: QuantizeConfig,
    quantizer: Quantizer | None = None,
) -> dict[str, Path]:
    """Both INT8 files of ``pre`` from the merged ``ranges``, by ``quantizer`` (default: the CNN family's)."""
    cache = out_dir / "calibration-cache.json"
    cm = write_cache(cache, ranges, cfg.method)
    variants = (quantizer or quantize_cnn)(pre, cache, cm, out_dir)
    cache.unlink()
    return {k: keep_used_opsets(p) for k, p in variants.items()}


def quantize_cnn(pre: Path, cache: Path, method: Any, out_dir: Path) -> dict[str, Path]:
    """The CNN family's two INT8 files: QDQ on every quantizable operator, per-channel weights."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    common = dict(
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        calibration_cache_path=str(cache),
    )
    trt = out_dir / "model.int8.trt.onnx"
    quantize_static(
        str(pre),
        str(trt),
        None,
        activation_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        **common,
    )
    cpu = out_dir / "model.int8.cpu.onnx"
    quantize_static(
        str(pre),
        str(cpu),
        None,
        activation_type=QuantType.QUInt8,
        reduce_range=True,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        **common,
    )
    return {"int8_trt": trt, "int8_cpu": cpu}


def _domains(graph) -> set[str]:
    """The operator domains the nodes of ``graph`` (or of a function) and of their subgraphs (If, Loop, Scan
    bodies) use."""
    used = set()
    for node in graph.node:
        used.add(node.domain or "")
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used |= _domains(sub)
    return used


def keep_used_opsets(path: Path) -> Path:
    """Drop the opset imports no node uses. ONNX Runtime's optimizer (quant_pre_process) stamps every domain it
    knows into the model (ai.onnx.ml 5, com.microsoft.nchwc, org.pytorch.aten, ...), and a runtime older than
    the one that quantized refuses a model that imports a version it does not know, used or not: ONNX Runtime
    1.17, on Python 3.10 devices such as JetPack 6, refused every INT8 release with 'ai.onnx.ml is till opset 4'."""
    import onnx

    model = onnx.load(str(path))
    used = _domains(model.graph) | {""}
    for f in model.functions:  # a local function's own domain and its nodes'
        used |= {f.domain} | _domains(f)
    keep = [o for o in model.opset_import if (o.domain or "") in used]
    if len(keep) < len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(path))
    return path
