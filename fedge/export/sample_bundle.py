"""Signed release bundles written with the same ``write_bundle`` as a real export, without running a federation:
an untrained task model (FP32 only), and the digits model trained on the shipped data and quantized as the export
quantizes (FP32 + both INT8 variants). For tests and benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fedge.core.tasks import get_task
from fedge.edge_runtime.distribution.bundle import Manifest, TensorDesc, load_private_key, write_bundle
from fedge.export.onnx_export import to_onnx
from fedge.export.profiles import profile_of


def untrained_bundle(
    out: Path,
    key_path: Path,
    task_name: str = "digits",
    model_name: str | None = None,
    seed: int = 0,
    max_batch_size: int = 64,
    monitoring: dict | None = None,
) -> Path:
    task = get_task(task_name)
    torch.manual_seed(seed)
    model = task.export_module(task.build_model())
    sample, axes = profile_of(task).sample(task)
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    to_onnx(model, sample, out / "model.fp32.onnx", dynamic_axes=axes)
    return sign_bundle(out, key_path, task_name, model_name, seed, max_batch_size, monitoring=monitoring)


def sign_bundle(
    out: Path,
    key_path: Path,
    task_name: str,
    model_name: str | None = None,
    seed: int = 0,
    max_batch_size: int = 64,
    models: dict[str, str] | None = None,
    monitoring: dict | None = None,
) -> Path:
    """Sign ``out`` as a bundle of the task's model: ``models`` (kind -> file in ``out``, by default only
    ``model.fp32.onnx``) with the task's input and logits output; ``monitoring``: the manifest's drift reference."""
    task = get_task(task_name)
    spec = task.input_spec()
    for name, path in task.bundle_files().items():
        shutil.copyfile(path, Path(out) / name)
    manifest = Manifest(
        model=model_name or task_name,
        task=task_name,
        inputs=(TensorDesc("input", spec.datatype, tuple(spec.shape)),),
        outputs=(TensorDesc("logits", "FP32", (-1, task.num_classes)),),
        models=models or {"fp32": "model.fp32.onnx"},
        labels=tuple(task.labels),
        preprocessing=task.preprocessing(),
        max_batch_size=max_batch_size,
        lineage={"run": 0, "round": 0, "seed": seed},
        monitoring=monitoring or {},
    )
    write_bundle(out, manifest, load_private_key(key_path))
    return out


def trained_digits(work: Path, epochs: int = 6) -> tuple[dict[str, Path], Path, dict]:
    """The digits model trained on the shipped data (seed 0), exported, calibrated on its training rows (MinMax) and
    quantized with the export's settings -> files by kind (fp32, int8_cpu, int8_trt) in ``work``, the preprocessed
    FP32 graph that was quantized, and the calibration ranges."""
    from fedge.client.jobs import calibration_minmax
    from fedge.core.tasks import split_holdout
    from fedge.core.tasks.training import TrainConfig, train
    from fedge.export.calibration import merge_minmax
    from fedge.export.quantize import QuantizeConfig, preprocess, quantize_variants

    task = get_task("digits")
    train_ds, _ = split_holdout(task.reference_data())
    torch.manual_seed(0)
    model = task.build_model()
    train(model, train_ds, TrainConfig(epochs=epochs, batch_size=32, lr=3e-3))
    work.mkdir(parents=True, exist_ok=True)
    fp32 = to_onnx(model, train_ds.x[:2], work / "model.fp32.onnx")
    pre = preprocess(fp32, work / "pre.onnx")
    ranges = merge_minmax([{k: (v[0], v[1]) for k, v in calibration_minmax(pre.read_bytes(), train_ds.x).items()}])
    return {"fp32": fp32, **quantize_variants(pre, ranges, work, QuantizeConfig())}, pre, ranges


def trained_digits_bundle(
    out: Path, key_path: Path, model_name: str = "digits", kinds: tuple[str, ...] = ("fp32", "int8_cpu", "int8_trt")
) -> Path:
    """A signed bundle of :func:`trained_digits`' ``kinds`` (a CPU device serves INT8 CPU where it is present)."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    files, pre, _ = trained_digits(out)
    pre.unlink()
    for kind, path in files.items():
        if kind not in kinds:
            path.unlink()
    return sign_bundle(out, key_path, "digits", model_name, models={k: files[k].name for k in kinds})
