"""The export's stages. Each takes the path the stage before it wrote and writes one of its own, so every step
leaves an artifact to inspect (and a failed export shows how far it got):

    checkpoint --prune--> pruned.safetensors --recover--> recovered checkpoint --onnx--> model.fp32.onnx
    --calibrate--> calibration.json --quantize--> model.int8.{cpu,trt}.onnx --gate--> gate.json --sign--> bundle
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedge.core.tasks import Task
from fedge.core.wire import JobKey, JobKind
from fedge.edge_runtime.distribution.bundle import Manifest, TensorDesc, write_bundle
from fedge.export import forgetting
from fedge.export.calibration import histogram_edges, merge_histograms, merge_minmax, ranges_from_histograms, uses_abs
from fedge.export.federated import run_job
from fedge.export.gate import GateFailed, GateReport, aggregate_gate
from fedge.export.onnx_export import check_parity, to_onnx
from fedge.export.profiles import profile_of
from fedge.export.prune import PruneConfig, SparsityReport, sparsity
from fedge.export.quantize import QuantizeConfig, preprocess, quantize_variants
from fedge.export.reference import monitoring_reference
from fedge.server.checkpoint import load_checkpoint, save_checkpoint
from fedge.server.registry import Registry, RoundRecord
from fedge.server.run_config import RunConfig
from fedge.server.runs import RunFailed, RunProgress, launch

Say = Callable[[str], None]  # where a stage reports what it did (rich markup), e.g. Console.print
GATE_VARIANTS = ("fp32", "int8_cpu", "int8_trt")
CALIBRATION_SAMPLES_MAX = 256  # per customer (client.jobs)


@dataclass(frozen=True)
class Source:
    """What an export starts from: a completed round of a run, its checkpoint, its task and its run config."""

    state: Path
    registry: Registry
    run: int
    round: RoundRecord
    task: Task
    run_config: RunConfig

    def job(self, kind: str, work: Path, config: dict, files: dict[str, Path], timeout: float) -> dict:
        """One export job on the run's customers (federated calibration, the gate): only statistics come back."""
        return run_job(
            self.state,
            work / kind,
            kind,
            self.task.name,
            {**self.run_config.task_settings(), **config},
            files,
            self.run_config.min_clients,
            timeout,
        )


def load_model(task, checkpoint: Path):
    """The task's model with the checkpoint's weights."""
    from fedge.core.tasks.training import set_arrays

    model = task.build_model()
    ckpt, _ = load_checkpoint(Path(checkpoint))
    names = list(model.state_dict())
    set_arrays(model, names, [ckpt[k] for k in names])
    return model


def masked(src: Source, spec: str) -> Source:
    """A text run's export under a sparsity mask: the task (and the recovery run's config, hence every customer)
    builds its model with the mask held on the merged encoder weights (fedge.core.tasks.lora_model.hold_mask)."""

    from fedge.core.tasks.text import TextTask

    assert isinstance(src.task, TextTask), "a mask held in the model is the text task's"
    return dataclasses.replace(
        src, task=dataclasses.replace(src.task, prune=spec), run_config=src.run_config.with_(prune=spec)
    )


def prune(task, checkpoint: Path, spec: str, out: Path) -> Path:
    """Stage 1: magnitude pruning (``none``, ``2:4``, ``unstructured:P``) -> the pruned weights. (A text model's
    trained arrays are its adapters and head: its mask is held by the model itself, see ``masked``.)"""
    model = load_model(task, checkpoint)
    profile_of(task).prune(model, spec)
    save_checkpoint(out, {k: v.detach().numpy() for k, v in model.state_dict().items()}, {"task": task.name})
    return out


def recover(
    src: Source, pruned: Path, spec: str, rounds: int, progress: RunProgress, say: Say
) -> tuple[Path, int | None]:
    """Stage 2: federated recovery rounds from the pruned weights with the mask held (zeros stay zeros) -> the
    recovery run's last checkpoint and that run's id (the pruned weights themselves when there is nothing to
    recover)."""
    if PruneConfig.parse(spec).method == "none" or rounds == 0:
        return pruned, None
    say(f"[bold]recovery[/bold]: {rounds} federated round(s) with the {spec} mask held")
    outcome = launch(
        src.state,
        src.run_config.with_(num_rounds=rounds, start_round=0, init=str(pruned), hold_sparsity=True, fedge_run_id=0),
        progress=progress,
    )
    if not outcome.ok:
        raise RunFailed(f"recovery run {outcome.run_id} failed: {outcome.reason}")
    last = src.registry.last_round(outcome.run_id)
    assert last is not None, "a completed run has rounds"
    return Path(last.checkpoint), outcome.run_id


def onnx(task, checkpoint: Path, out: Path, say: Say) -> tuple[Path, float]:
    """Stage 3: ONNX FP32 (opset 17), checked against PyTorch on the task's sample inputs -> the model and the
    largest difference seen. A text model is exported with its adapters merged into the base, with dynamic batch
    and sequence axes, and also fused for ONNX Runtime (``model.fp32.fused.onnx`` beside it)."""
    model = task.export_module(load_model(task, checkpoint))
    sample = task.sample_inputs()
    dynamic = [i for i, n in enumerate(task.input_spec().shape) if n < 0]
    to_onnx(model, sample[:2], out, dynamic_axes=dynamic)
    parity = check_parity(model, out, sample)
    say(f"[bold]onnx[/bold]: opset 17, parity max|diff| {parity.max_abs_diff:.2e}")
    profile_of(task).after_onnx(task, model, out, sample, say)  # a transformer is fused for ONNX Runtime here
    return out, parity.max_abs_diff


def calibrate(src: Source, fp32: Path, method: str, bins: int, timeout: float, out: Path, say: Say) -> Path:
    """Stage 4: federated calibration of the pre-processed FP32 model: each customer sends per-tensor ranges (and,
    for entropy/percentile, histograms over edges the coordinator chose from the merged ranges) -> calibration.json."""
    profile = profile_of(src.task)
    pre = preprocess(fp32, out.parent / "model.fp32.pre.onnx", profile.skip_symbolic_shape)
    work = out.parent
    mm = src.job(JobKind.CALIBRATE_MINMAX, work, {}, {JobKey.MODEL: pre}, timeout)
    ranges = merge_minmax([{k: tuple(v) for k, v in r.items()} for r in mm["results"].values()])
    if method != "minmax":
        edges = histogram_edges(ranges, bins, method)
        hist = src.job(
            JobKind.CALIBRATE_HIST,
            work,
            {JobKey.EDGES: json.dumps({k: v.tolist() for k, v in edges.items()}), JobKey.ABSOLUTE: uses_abs(method)},
            {JobKey.MODEL: pre},
            timeout,
        )
        ranges = ranges_from_histograms(merge_histograms(list(hist["results"].values())), edges, ranges, method)
    say(f"[bold]calibration[/bold] {method}: {len(ranges)} tensors from {len(mm['results'])} customers")
    out.write_text(
        json.dumps(
            {
                "method": method,
                "model": pre.name,
                "customers": sorted(mm["results"]),
                "profile": profile.name,
                "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in ranges.items()},
            }
        )
    )
    return out


def quantize(calibration: Path, fp32: Path, bundle: Path) -> dict[str, Path]:
    """Stage 5: the two INT8 QDQ models (uint8 activations for CPUs, signed symmetric for TensorRT) into the bundle
    directory, with the FP32 model beside them -> the bundle's model files by variant."""
    doc = json.loads(calibration.read_text())
    ranges = {k: (lo, hi) for k, (lo, hi) in doc["ranges"].items()}
    profile = profile_of(doc.get("profile", "cnn"))
    variants = quantize_variants(
        calibration.parent / doc["model"], ranges, bundle, QuantizeConfig(doc["method"]), profile.quantizer
    )
    shutil.copyfile(profile.serving_fp32(fp32), bundle / "model.fp32.onnx")
    return {"fp32": bundle / "model.fp32.onnx", **variants}


def gate(
    src: Source,
    models: dict[str, Path],
    max_drop: float,
    reference_rows: int,
    timeout: float,
    out: Path,
    say: Say,
    max_forgetting: float = 0.01,
) -> GateReport:
    """Stage 6: the federated accuracy gate: every customer evaluates FP32 and both INT8 variants on its holdout
    (and the INT8 ones by the ONNX specification on its first ``reference_rows`` rows) -> gate.json; raises
    GateFailed (with the per-customer figures) if INT8 loses more than ``max_drop``; a release whose INT8 answers
    depend on the CPU is said so, with the numbers, and marked in the report."""
    profile = profile_of(src.task)
    reference_rows = profile.reference_rows(reference_rows, say)
    files = {JobKey.model_of(k): models[k] for k in GATE_VARIANTS}
    release = src.run_config.from_release
    if release:  # a run from a release: the customers also evaluate what devices serve now
        files[JobKey.model_of(JobKey.PREVIOUS)] = forgetting.previous_model(src.registry.releases(), release)
    g = src.job(
        JobKind.GATE,
        out.parent,
        {JobKey.KINDS: json.dumps(list(GATE_VARIANTS)), JobKey.REFERENCE_ROWS: reference_rows},
        files,
        timeout,
    )
    report = aggregate_gate(g["results"], max_drop, gated=profile.gated)
    report = dataclasses.replace(
        report,
        monitoring=monitoring_reference(g["results"]),
        forgetting=forgetting.forgetting_report(g["results"], release, max_forgetting) if release else {},
    )
    out.write_text(json.dumps(report.to_json(), indent=2))
    say(
        f"[bold]gate[/bold]: FP32 {report.fp32_accuracy:.4f}, INT8 {report.int8_accuracy:.4f},"
        f" drop {report.accuracy_drop:+.4f} (max {max_drop}), top-1 agreement {report.agreement:.4f}; "
        + ", ".join(
            f"{k} {v['accuracy']:.4f} ({v['drop']:+.4f}{', gated' if k in report.gated else ''})"
            for k, v in report.variants.items()
        )
    )
    say_reference(report, say)
    say_monitoring(report.monitoring, say)
    if report.forgetting:
        say_forgetting(report.forgetting, say)
        out.write_text(json.dumps(report.to_json(), indent=2))
        forgetting.check(report.forgetting)
    if not report.passed:
        per = ", ".join(
            f"{c}: {v['fp32_accuracy']:.4f} -> {v['int8_accuracy']:.4f}" for c, v in report.per_customer.items()
        )
        worst = max(report.gated, key=lambda k: report.variants[k]["drop"]) if report.gated else report.candidate
        drop = report.variants.get(worst, {}).get("drop", report.accuracy_drop)
        raise GateFailed(
            f"INT8 ({worst}) accuracy drop {drop:.4f} exceeds --max-accuracy-drop "
            f"{max_drop} (per customer {per}); release refused"
        )
    return report


def say_forgetting(f: dict, say: Say) -> None:
    o, added = f["original"], f.get("added")
    say(
        f"[bold]forgetting[/bold] against release {f['from_release']}: original holdouts {o['previous']:.4f} ->"
        f" {o['candidate']:.4f} ({-f['forgetting']:+.4f}, max drop {f['max_forgetting']})"
        + (
            f"; added data's holdouts {added['previous']:.4f} -> {added['candidate']:.4f}"
            f" ({added['candidate'] - added['previous']:+.4f}, {added['examples']} rows)"
            if added
            else ""
        )
    )


def say_monitoring(ref: dict, say: Say) -> None:
    if not ref:
        say("[bold]monitoring[/bold]: no customer sent holdout statistics: devices will not compute drift")
        return
    say(
        f"[bold]monitoring[/bold]: temperature {ref['temperature']:.3g} over {ref['examples']} holdout rows (least"
        f" NLL at {ref['temperature_least_nll']:.3g}); estimated accuracy {ref['estimated_accuracy']:.4f} against"
        f" measured {ref['holdout_accuracy']:.4f}"
        f" (uncalibrated {ref['uncalibrated_estimate']:.4f}); class and confidence histograms are the drift reference"
    )


def say_reference(report: GateReport, say: Say) -> None:
    ref = report.reference.get(report.candidate)
    if ref is None:
        return
    errors = {c: v["error"] for c, v in ref["per_customer"].items() if v.get("error")}
    if errors:
        say(f"[bold]reference[/bold]: not evaluated by {', '.join(errors)} ({next(iter(errors.values()))})")
    if report.cpu_dependent:
        cpus = ", ".join(
            f"{c}: {v['agreement']:.4f} on {v['cpu']}"
            for c, v in ref["per_customer"].items()
            if v.get("agreement") is not None
        )
        say(
            f"[bold yellow]CPU-dependent INT8[/bold yellow]: {report.candidate} agrees with the ONNX specification"
            f" on {ref['agreement']:.4f} of {ref['rows']} rows (max logit difference {ref['max_abs_diff']:.3g};"
            f" {cpus}): devices on other CPUs will not all give the answers this gate measured"
        )
    elif ref["rows"]:
        say(
            f"[bold]reference[/bold]: {report.candidate} gives the ONNX specification's answers on all {ref['rows']}"
            f" rows checked (max logit difference {ref['max_abs_diff']:.3g})"
        )


def sign(
    src: Source,
    bundle: Path,
    lineage: dict,
    calibration: Path,
    report: GateReport,
    pruned: SparsityReport,
    parity: float,
    max_batch_size: int,
    signing_key,
) -> Manifest:
    """Stage 7: the manifest (what the device serves and how it was made) signed into the bundle -> the manifest."""
    task, spec = src.task, src.task.input_spec()
    cal = json.loads(calibration.read_text())
    for name, path in task.bundle_files().items():  # e.g. the tokenizer the device tokenizes with
        shutil.copyfile(path, bundle / name)
    manifest = Manifest(
        model=task.name,
        task=task.name,
        inputs=(TensorDesc("input", spec.datatype, tuple(spec.shape)),),
        outputs=(TensorDesc("logits", "FP32", (-1, task.num_classes)),),
        models={"fp32": "model.fp32.onnx", "int8_cpu": "model.int8.cpu.onnx", "int8_trt": "model.int8.trt.onnx"},
        labels=tuple(task.labels),
        preprocessing=task.preprocessing(),
        max_batch_size=max_batch_size,
        lineage=lineage,
        sparsity=pruned.to_json(),
        calibration={
            "method": cal["method"],
            "tensors": len(cal["ranges"]),
            "customers": cal["customers"],
            "samples_per_customer_max": CALIBRATION_SAMPLES_MAX,
        },
        gate=report.to_json(),
        sizes={p.name: p.stat().st_size for p in bundle.iterdir()},
        onnx={"opset": 17, "parity_max_abs_diff": parity},
        monitoring=report.monitoring,
    )
    return write_bundle(bundle, manifest, signing_key)


def measure_sparsity(task, checkpoint: Path, spec: str) -> SparsityReport:
    """Zeros of the model the release ships (a text model merged, under its mask)."""
    return sparsity(task.export_module(load_model(task, checkpoint)), PruneConfig.parse(spec).method)
