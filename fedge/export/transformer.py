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
        op_types_to_quantize=QUANTIZED_OPS,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
        },
        **common,
    )
    cpu = out_dir / "model.int8.cpu.onnx"
    quantize_static(
        str(pre),
        str(cpu),
        None,
        activation_type=QuantType.QUInt8,
        reduce_range=True,
        op_types_to_quantize=QUANTIZED_OPS + ["Gather"],  # + the embedding tables, stored in int8
        extra_options={
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS + ["Gather"],
        },
        **common,
    )
    for path in (trt, cpu):
        float_inputs_elsewhere(path)
    gather_then_dequantize(cpu)
    return {"int8_trt": trt, "int8_cpu": cpu}


def gather_then_dequantize(path: Path) -> Path:
    """Embedding tables stored in int8 and looked up before dequantizing: ``DQ(table) -> Gather(ids)`` becomes
    ``Gather(table, ids) -> DQ`` (the same values for a per-tensor scale), so a request dequantizes only its own
    rows; ONNX Runtime would otherwise dequantize the whole 30522 x 384 table on every call (+1.8 ms at batch 1)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers]:
        users = readers.get(dq.output[0], [])
        scalar = all(len(initializers[i].dims) == 0 for i in dq.input[1:] if i in initializers)
        if len(users) != 1 or users[0].op_type != "Gather" or users[0].input[0] != dq.output[0] or not scalar:
            continue
        gather = users[0]
        rows = gather.output[0] + "_quantized"
        gather.input[0], dq.input[0] = dq.input[0], rows
        dq.output[0], gather.output[0] = gather.output[0], rows
        graph.node.remove(dq)
        graph.node.insert(
            list(graph.node).index(gather) + 1,
            helper.make_node("DequantizeLinear", list(dq.input), list(dq.output), name=dq.name),
        )
    drop_unread(graph)
    onnx.save(model, str(path))
    return path


def drop_unread(graph) -> None:
    """Remove the nodes whose outputs nothing reads (the Q/DQ pairs left behind when a reader took a float or
    int8 tensor instead), and the initializers no node reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def float_inputs_elsewhere(path: Path) -> Path:
    """Only MatMul/Gemm read dequantized tensors: ONNX Runtime's quantizer hands the quantized copy of a tensor to
    every consumer (a LayerNormalization output feeds the next MatMul and the residual Add); the others (the
    residual Adds) are given the float tensor back, so quantization touches the matrix products alone."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    onnx.save(model, str(path))
    return path


def qdq_structure(path: Path) -> dict:
    """What a QDQ file quantizes: Q/DQ counts, the op types that read dequantized tensors (TensorRT's transformer
    rules: MatMul and Gemm only; LayerNormalization, Softmax and GELU compute on float inputs), and the
    activations' integer types."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    zero_points = {i.name: i.data_type for i in graph.initializer}
    dq_fed, activation_types = set(), set()
    for n in graph.node:
        if n.op_type == "DequantizeLinear":
            dq_fed |= {c.op_type for c in consumers.get(n.output[0], [])}
        if n.op_type == "QuantizeLinear" and len(n.input) > 2:  # activations (weights are stored quantized)
            activation_types.add(zero_points.get(n.input[2]))
    return {
        "quantize": sum(n.op_type == "QuantizeLinear" for n in graph.node),
        "dequantize": sum(n.op_type == "DequantizeLinear" for n in graph.node),
        "dequantized_into": sorted(dq_fed),
        "activation_types": sorted(t for t in activation_types if t is not None),
    }  # onnx: 2 uint8, 3 int8
