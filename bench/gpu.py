"""GPU paths, run on a lent GPU machine (never in CI, which has none): ONNX Runtime's CUDA provider in-process
(the bundle's FP32 file and its TensorRT-form INT8 file, batch 1 and 64) beside PyTorch eager on CUDA and the
CPU INT8 file on 1 thread; then ``fedge edge serve --backend onnxruntime-cuda`` over gRPC with and without
dynamic batching (the serving benchmark, CUDA backend). ``python -m bench --only gpu --docs docs/gpu``.
TensorRT itself is not run: its libraries cannot be installed on the machines fedge is built on."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fedge.edge_runtime.serving.backends import OrtBackend, cuda_available

from . import resnet, serving
from .inference import measure as measure_latency
from .inference import ort_runner
from .report import Section
from .timing import paired_ratio


def _torch_cuda(model):
    model = model.to("cuda").eval()

    def run(x):
        with torch.inference_mode():
            y = model(torch.from_numpy(x).to("cuda", non_blocking=True)).cpu()
        return y

    return run


def shape_switches(path: Path, progress) -> list[dict]:
    """What a CUDA session pays when its batch size changes, per cuDNN search mode, against fedge's bucketed
    backend (a session per batch size, warmed): the reason the CUDA backend keeps one session per bucket."""
    import onnxruntime as ort

    from fedge.edge_runtime.serving.backends import gpu_buckets

    def timed(fn, b):
        t0 = time.perf_counter()
        fn({"input": np.zeros((b, *resnet.INPUT), np.float32)})
        return (time.perf_counter() - t0) * 1e3

    sequence = (1, 64, 1, 64, 16, 1)
    rows, t = [], progress.add_task("gpu: batch-size switches per cuDNN search mode", total=4)
    for algo in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
        sess = ort.InferenceSession(
            str(path), providers=[("CUDAExecutionProvider", {"cudnn_conv_algo_search": algo}), "CPUExecutionProvider"]
        )
        run = lambda feeds, sess=sess: sess.run(None, feeds)
        rows.append(_switch_row(f"one session, cudnn_conv_algo_search={algo}", run, timed, sequence))
        progress.advance(t)
    be = OrtBackend.load(path, "onnxruntime-cuda", "bench", buckets=gpu_buckets(64))  # warmed at load
    rows.append(_switch_row("fedge: a session per bucket (1/4/16/64), warmed", be.run, timed, sequence))
    progress.advance(t)
    return rows


def _switch_row(label, run, timed, sequence) -> dict:
    for b in (1, 64):
        timed(run, b)
    switches = [timed(run, b) for b in sequence]
    steady = {b: float(np.median([timed(run, b) for _ in range(50)])) for b in (1, 64)}
    return {
        "setup": label,
        "batch sizes in turn": "-".join(map(str, sequence)),
        "ms per call in that order": " / ".join(f"{v:.1f}" for v in switches),
        "steady b1 ms": steady[1],
        "steady b64 ms": steady[64],
        # the two b1 calls that follow another size, over a steady b1 call
        "extra ms on a b1 call after a switch": float(np.median([switches[2], switches[5]])) - steady[1],
    }


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    if not (cuda_available() and torch.cuda.is_available()):
        raise SystemExit("bench gpu: needs a CUDA GPU, onnxruntime-gpu (CUDAExecutionProvider) and torch with CUDA")

    sec = Section(f"GPU: ONNX Runtime CUDA provider on {torch.cuda.get_device_name(0)}")
    t = progress.add_task("gpu: building the ResNet-18-style FP32 / INT8 models", total=1)
    art = resnet.build(work / "resnet")
    progress.advance(t)
    models = {
        "torch_fp32": _torch_cuda(art.torch_model),
        "ort_fp32": ort_runner(art.fp32, "onnxruntime-cuda"),
        "ort_cuda_int8_trt_form": ort_runner(art.int8_trt, "onnxruntime-cuda"),
        "ort_cpu_int8_1thread": ort_runner(art.int8_cpu, "onnxruntime-cpu"),
    }
    rows, s = measure_latency(
        "resnet18-style", models, resnet.INPUT, {1: 5 if quick else 15, 64: 3 if quick else 9}, progress
    )
    for r in rows:
        r["variant"] = {"torch_fp32": "torch CUDA FP32 (eager)", "ort_fp32": "ORT CUDA FP32"}.get(
            r["variant"], r["variant"]
        )
    sec.tables.append(
        (
            "In-process latency per call, host arrays in and out (ratios: how many times faster than the"
            " reference, paired per repetition)",
            rows,
        )
    )
    ratio = lambda b, num, den: paired_ratio(s[b][num], s[b][den])["median"]
    sec.figures.update(
        {
            "cuda_fp32_vs_cpu_int8_resnet_b64": ratio(64, "ort_cpu_int8_1thread", "ort_fp32"),
            "cuda_int8_qdq_vs_cuda_fp32_resnet_b64": ratio(64, "ort_fp32", "ort_cuda_int8_trt_form"),
            "cuda_fp32_b64_vs_b1_per_image": 64
            * float(np.median(s[1]["ort_fp32"]))
            / float(np.median(s[64]["ort_fp32"])),
        }
    )
    switches = shape_switches(art.fp32, progress)
    sec.tables.append(
        (
            "Batch-size changes on one CUDA session (FP32 file, after both shapes ran once): the first"
            " call at a new size re-plans every convolution",
            switches,
        )
    )
    sec.figures["cuda_shape_switch_extra_ms_one_session"] = switches[0]["extra ms on a b1 call after a switch"]
    sec.figures["cuda_shape_switch_extra_ms_bucketed"] = switches[-1]["extra ms on a b1 call after a switch"]
    inproc_b64_vs_b1 = serving.measure(
        sec,
        work / "serving",
        progress,
        quick,
        backend="onnxruntime-cuda",
        suffix="_cuda",
        plot=docs / "bench-serving-cuda.png" if docs is not None else None,
    )
    sec.notes += [
        f"In-process, ONNX Runtime CUDA runs the served file {inproc_b64_vs_b1:.1f}x faster per image at batch 64"
        " than at batch 1: the per-call cost (kernel launches, host-device copies) that dynamic batching amortizes.",
        "The CUDA backend serves the bundle's TensorRT-form INT8 file (symmetric int8 QDQ), as the edge issue asks."
        " ONNX Runtime's CUDA provider has no fused integer convolution: it runs the QDQ graph as dequantize ->"
        " FP32 convolution -> quantize, so on CUDA the INT8 file is a size win, not a speed win; speed from INT8 on"
        " a GPU comes from TensorRT, which fuses the Q/DQ pairs into INT8 kernels (not run here: TensorRT cannot be"
        " installed on these machines).",
        "Nothing in this section ran in CI; it was run by hand on a lent GPU machine with onnxruntime-gpu installed"
        " beside the machine's own PyTorch (see the versions above).",
    ]
    return sec
