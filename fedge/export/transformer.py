"""The export's transformer profile (the ``text`` task): how an encoder's graph is fused and quantized.

* FP32 for ONNX Runtime: the exported graph fused by ONNX Runtime's transformer optimizer (Attention,
  EmbedLayerNormalization, SkipLayerNormalization, BiasGelu), ``model.fp32.onnx`` in the bundle.
* INT8, both variants from the exported (unfused) graph, QDQ on the MatMul/Gemm inputs only: LayerNormalization,
  Softmax and GELU stay in float, as TensorRT's transformer recipe wants (quantizing their outputs symmetric cost
  10.8 accuracy points in a probe, ../shared/research/transformer-probe.md), and bias stays float:
  - ``model.int8.cpu.onnx``: uint8 activations, 7-bit per-channel weights (the same cross-CPU rule as the CNN
    profile, fedge.export.quantize);
  - ``model.int8.trt.onnx``: symmetric int8 activations and weights (zero point 0), per-channel weights.
  Quantizing the fused graph instead was measured no faster than FP32 on ONNX Runtime 1.32 (its QDQ MatMuls feed
  fused contrib ops and stay in float kernels); the unfused QDQ graph gets ONNX Runtime's own fusions at load.
The encoder's word-embedding table (a Gather) stays FP32 in both INT8 files.
"""
from __future__ import annotations

import json
from pathlib import Path

QUANTIZED_OPS = ["MatMul", "Gemm"]
FLOAT_OPS = ("LayerNormalization", "Softmax", "Erf", "Gelu", "BiasGelu", "FastGelu", "SkipLayerNormalization")


def encoder_shape(config_json: Path) -> tuple[int, int]:
    """(attention heads, hidden size) from a Hugging Face config.json."""
    cfg = json.loads(Path(config_json).read_text())
    return int(cfg["num_attention_heads"]), int(cfg["hidden_size"])


def fuse(fp32: Path, out: Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer optimizer over the exported graph (model type bert) -> the fused FP32 model."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
    model.save_model_to_file(str(out))
    return out


def fused_operators(path: Path) -> dict[str, int]:
    """How many of each fused operator a graph holds (for the export's report)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_transformer(pre: Path, cache: Path, method, out_dir: Path) -> dict[str, Path]:
    """The two INT8 QDQ files of an encoder from the calibration cache ``cache`` (ranges of ``pre``'s tensors)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    common = dict(quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8, calibrate_method=method,
                  calibration_cache_path=str(cache), op_types_to_quantize=QUANTIZED_OPS)
    trt = out_dir / "model.int8.trt.onnx"
    quantize_static(str(pre), str(trt), None, activation_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
                    **common)
    cpu = out_dir / "model.int8.cpu.onnx"
    quantize_static(str(pre), str(cpu), None, activation_type=QuantType.QUInt8, reduce_range=True,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "QuantizeBias": False},
                    **common)
    return {"int8_trt": trt, "int8_cpu": cpu}


def qdq_structure(path: Path) -> dict:
    """What a QDQ file quantizes: Q/DQ counts, the op types whose inputs are dequantized, and whether any float
    op's output is quantized (TensorRT's transformer rules: it must not be)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dq_fed, float_quantized = set(), []
    for n in graph.node:
        if n.op_type == "DequantizeLinear":
            dq_fed |= {c.op_type for c in consumers.get(n.output[0], [])}
        if n.op_type == "QuantizeLinear" and n.input[0] in producer and producer[n.input[0]].op_type in FLOAT_OPS:
            float_quantized.append(producer[n.input[0]].op_type)
    return {"quantize": sum(n.op_type == "QuantizeLinear" for n in graph.node),
            "dequantize": sum(n.op_type == "DequantizeLinear" for n in graph.node),
            "dequantized_into": sorted(dq_fed), "float_ops_quantized": sorted(set(float_quantized))}
