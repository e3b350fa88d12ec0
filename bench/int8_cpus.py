"""INT8 on every CPU: the digits model's CPU INT8 variant as the export writes it now (7-bit weights,
``reduce_range``) and as it wrote it before (8-bit weights), on all 1,797 scikit-learn digits: accuracy on this
machine's ONNX Runtime, agreement with the ONNX specification (onnx.reference, what arm64 and VNNI x86 compute),
the largest logit difference, and ONNX Runtime's speed (1 thread, batch 1 and 64). Which CPU this is (VNNI or
not) decides whether the 8-bit variant can disagree: the machine block above says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .inference import ort_runner
from .report import Section
from .timing import interleaved, stats


def variants(work: Path) -> tuple[dict[str, Path], np.ndarray, np.ndarray]:
    """The digits model trained on the shipped data, exported, calibrated locally (MinMax) and quantized both
    ways -> the files by variant, and the 1,797 images with their labels."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from fedge.core.tasks import get_task
    from fedge.export.calibration import write_cache
    from fedge.export.sample_bundle import trained_digits

    data = get_task("digits").reference_data()
    files, pre, ranges = trained_digits(work)
    fp32, now = files["fp32"], files["int8_cpu"]
    before = work / "model.int8.cpu.8bit.onnx"  # the CPU variant as fedge wrote it until 2026-12-02
    cache = work / "cache.json"
    quantize_static(
        str(pre),
        str(before),
        None,
        activation_type=QuantType.QUInt8,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        calibrate_method=write_cache(cache, ranges, "minmax"),
        calibration_cache_path=str(cache),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return {"FP32": fp32, "INT8, 8-bit weights (before)": before, "INT8, 7-bit weights (now)": now}, data.x, data.y


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    from fedge.core.onnx_reference import reference_outputs

    sec = Section("INT8 on every CPU: the digits model's CPU variant against the ONNX specification")
    t = progress.add_task("int8 on every CPU: train, quantize, reference-evaluate 1,797 digits", total=4)
    files, x, y = variants(work)
    progress.advance(t)
    rows, timings = [], {}
    for name, path in files.items():
        runner = ort_runner(path)
        got = np.concatenate([runner(x[i : i + 256])["logits"] for i in range(0, len(x), 256)])
        expected = reference_outputs(path.read_bytes(), x)
        rows.append(
            {
                "model": name,
                "images": len(x),
                "accuracy (ONNX Runtime here)": float((got.argmax(1) == y).mean()),
                "accuracy (ONNX specification)": float((expected.argmax(1) == y).mean()),
                "top-1 differences from the specification": int((got.argmax(1) != expected.argmax(1)).sum()),
                "max logit difference": float(np.abs(got - expected).max()),
            }
        )
        timings[name] = runner
        progress.advance(t)
    speed = []
    for batch in (1, 64):
        xb = x[:batch]
        s = interleaved(
            {name: (lambda r=r, xb=xb: r(xb)) for name, r in timings.items()}, reps=5 if quick else 15, target_s=0.2
        )
        for name, ts in s.items():
            speed.append(
                {
                    "model": name,
                    "batch": batch,
                    "median ms": stats(ts)["median"] * 1e3,
                    "images/s": batch / stats(ts)["median"],
                }
            )
    sec.tables.append(
        ("All 1,797 scikit-learn digits; ONNX Runtime (this machine, 1 thread) against onnx.reference", rows)
    )
    sec.tables.append(("ONNX Runtime, 1 thread: median of interleaved repetitions", speed))
    now, before = rows[2], rows[1]
    sec.figures.update(
        {
            "int8_cpu_reference_differences": now["top-1 differences from the specification"],
            "int8_cpu_8bit_reference_differences": before["top-1 differences from the specification"],
            "int8_cpu_accuracy_7bit_minus_8bit": now["accuracy (ONNX specification)"]
            - before["accuracy (ONNX specification)"],
            "int8_cpu_speed_7bit_over_8bit_b64": next(
                r["images/s"] for r in speed if r["batch"] == 64 and r["model"] == now["model"]
            )
            / next(r["images/s"] for r in speed if r["batch"] == 64 and r["model"] == before["model"]),
        }
    )
    sec.notes.append(
        "7-bit weights keep every pair of u8 x s8 products within int16 (2 x 255 x 64 = 32640), so ONNX"
        " Runtime's x86 kernels without VNNI compute what arm64, VNNI x86 and the specification compute;"
        " with 8-bit weights a non-VNNI x86 saturated and gave 20 different predictions of 1,797"
        " (shared/research/arm64-device-probe.md). On a VNNI CPU both variants match the specification."
    )
    return sec
