"""Edge inference on the CPU, 1 thread: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8 (the
bundle's uint8-activation CPU variant) vs INT8 + 2:4, batch 1 and 64, on the ResNet-18-style net and on the
digits model. Also the ResNet size ratios (the compression figures)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from fedge.edge_runtime.serving.backends import OrtBackend

from .report import Section
from .timing import interleaved, paired_ratio, stats


def ort_runner(path: Path, backend: str = "onnxruntime-cpu"):
    be = OrtBackend.load(path, backend, "bench", threads=1)
    name = be.session.get_inputs()[0].name
    return lambda x: be.run({name: x})


def _torch(model):
    model.eval()

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return run


def _variants(models: dict[str, object], x: np.ndarray) -> dict:
    return {name: (lambda fn=fn: fn(x)) for name, fn in models.items()}


def measure(name: str, models: dict, input_shape: tuple, reps: dict[int, int], progress) -> tuple[list[dict], dict]:
    rows, samples = [], {}
    for batch, n in reps.items():
        x = np.random.default_rng(batch).standard_normal((batch, *input_shape)).astype(np.float32)
        task = progress.add_task(f"inference {name} b{batch}", total=n)
        s = interleaved(
            _variants(models, x),
            reps=n,
            target_s=0.25 if batch == 1 else 0.5,
            on_rep=lambda task=task: progress.advance(task),
        )
        samples[batch] = s
        for v, t in s.items():
            st = stats(t)
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "variant": v,
                    "min ms": st["min"] * 1e3,
                    "median ms": st["median"] * 1e3,
                    "max ms": st["max"] * 1e3,
                    "images/s": batch / st["median"],
                    "vs ORT FP32": paired_ratio(s["ort_fp32"], t)["median"],
                    "vs torch FP32": paired_ratio(s["torch_fp32"], t)["median"],
                }
            )
    return rows, samples


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    from fedge.client.jobs import calibration_minmax
    from fedge.core.tasks import get_task
    from fedge.export.onnx_export import to_onnx
    from fedge.export.quantize import QuantizeConfig, preprocess, quantize_variants

    from . import resnet

    torch.set_num_threads(1)
    sec = Section("Edge inference on the CPU (1 thread)")
    t = progress.add_task("building ResNet-18-style FP32 / INT8 / INT8 2:4 models", total=2)
    dense = resnet.build(work / "resnet-dense")
    progress.advance(t)
    sparse = resnet.build(work / "resnet-2of4", prune="2:4")
    progress.advance(t)
    rn_models = {
        "torch_fp32": _torch(dense.torch_model),
        "ort_fp32": ort_runner(dense.fp32),
        "ort_int8": ort_runner(dense.int8_cpu),
        "ort_int8_2of4": ort_runner(sparse.int8_cpu),
    }
    rows, rn = measure(
        "resnet18-style", rn_models, resnet.INPUT, {1: 5 if quick else 15, 64: 3 if quick else 9}, progress
    )

    digits = get_task("digits")
    torch.manual_seed(0)
    dmodel = digits.build_model().eval()
    dx = digits.reference_data().x[:2].astype(np.float32)
    (work / "digits").mkdir(parents=True, exist_ok=True)
    dfp32 = to_onnx(dmodel, dx, work / "digits" / "model.fp32.onnx")

    pre = preprocess(dfp32, work / "digits" / "model.pre.onnx")
    ranges = calibration_minmax(pre.read_bytes(), digits.reference_data().x.astype(np.float32))
    dq = quantize_variants(pre, {k: tuple(v) for k, v in ranges.items()}, work / "digits", QuantizeConfig())
    d_models = {"torch_fp32": _torch(dmodel), "ort_fp32": ort_runner(dfp32), "ort_int8": ort_runner(dq["int8_cpu"])}
    drows, dg = measure(
        "digits",
        d_models,
        tuple(digits.input_spec().shape[1:]),
        {1: 5 if quick else 20, 64: 5 if quick else 20},
        progress,
    )

    def ratio(s, num, den):
        return paired_ratio(s[num], s[den])["median"]

    sec.figures.update(
        {
            "int8_vs_ort_fp32_resnet_b64": ratio(rn[64], "ort_fp32", "ort_int8"),
            "int8_vs_torch_fp32_resnet_b64": ratio(rn[64], "torch_fp32", "ort_int8"),
            "int8_vs_ort_fp32_resnet_b1": ratio(rn[1], "ort_fp32", "ort_int8"),
            "int8_vs_torch_fp32_resnet_b1": ratio(rn[1], "torch_fp32", "ort_int8"),
            "int8_2of4_vs_int8_resnet_b64": ratio(rn[64], "ort_int8", "ort_int8_2of4"),
            "int8_vs_ort_fp32_digits_b64": ratio(dg[64], "ort_fp32", "ort_int8"),
        }
    )
    sec.tables.append(
        ("Latency per call (ratios: how many times faster than the reference, paired per repetition)", rows + drows)
    )

    fp32_size = dense.fp32.stat().st_size
    sizes = []
    for label, path in (
        ("FP32", dense.fp32),
        ("INT8 CPU (uint8 act.)", dense.int8_cpu),
        ("INT8 TensorRT form", dense.int8_trt),
        ("INT8 CPU 2:4", sparse.int8_cpu),
        ("INT8 TensorRT form 2:4", sparse.int8_trt),
    ):
        raw = path.read_bytes()
        sizes.append(
            {
                "ResNet-18-style file": label,
                "bytes": len(raw),
                "vs FP32": len(raw) / fp32_size,
                "deflate-9 bytes": len(zlib.compress(raw, 9)),
                "deflate-9 vs FP32": len(zlib.compress(raw, 9)) / fp32_size,
            }
        )
    sec.figures["int8_size_ratio_resnet"] = sizes[1]["vs FP32"]
    sec.figures["int8_24_zipped_size_ratio_resnet"] = sizes[3]["deflate-9 vs FP32"]
    sec.tables.append(
        (
            "Model sizes (ratios against the FP32 .onnx; 'zipped' = zlib deflate level 9, what a zip of the file"
            " costs)",
            sizes,
        )
    )
    sec.notes += [
        f"ResNet-18-style: {resnet.macs_per_image(dense.torch_model) / 1e9:.2f} GMAC per 3x64x64 image, random weights,"
        " calibrated on 200 random N(0,1) images with fedge's own export stages (ONNX export, ORT MinMax calibration,"
        " ORT QDQ quantization).",
        "INT8 = the bundle's CPU variant (uint8 activations, int8 per-channel weights), which ONNX Runtime fuses into"
        " integer kernels on this CPU; the TensorRT-form (int8 symmetric) variant is for TensorRT and is not timed"
        " here.",
        "2:4 sparsity buys no CPU speed (ONNX Runtime's CPU kernels are dense); it pays in compressed size and on"
        " TensorRT's sparse kernels, which were not run.",
    ]
    sec.data = {"resnet": {str(b): s for b, s in rn.items()}, "digits": {str(b): s for b, s in dg.items()}}
    return sec
