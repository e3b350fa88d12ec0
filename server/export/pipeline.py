"""``fedge export``: the global model of a run becomes a signed INT8 edge release.

    prune -> federated recovery rounds (mask held) -> ONNX FP32 (+ parity) -> federated calibration
          -> two INT8 QDQ models -> federated accuracy gate -> signed bundle -> registry
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from edge_runtime.bundle import load_private_key, sha256_file, write_bundle

from ..checkpoint import load_checkpoint, save_checkpoint
from ..run_config import RunConfig
from ..runs import launch, open_registry
from .calibration import histogram_edges, merge_histograms, merge_minmax, ranges_from_histograms, uses_abs
from .federated import run_job
from .gate import GateFailed, aggregate_gate
from .onnx_export import check_parity, to_onnx
from .prune import PruneConfig, prune_model, sparsity
from .quantize import QuantizeConfig, preprocess, quantize_variants


@dataclass(frozen=True)
class ExportConfig:
    run: int
    out: Path
    round: int | None = None          # default: the run's last completed round
    prune: str = "none"               # none | 2:4 | unstructured:P
    recovery_rounds: int = 0
    calibration: str = "minmax"       # minmax | entropy | percentile
    histogram_bins: int = 2048
    max_accuracy_drop: float = 0.01
    key: Path | None = None           # release signing key (default STATE/keys/release.key)
    max_batch_size: int = 64
    job_timeout: float = 180.0

    def __post_init__(self) -> None:
        PruneConfig.parse(self.prune)
        QuantizeConfig(self.calibration)
        if self.recovery_rounds < 0 or not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError("recovery_rounds must be >= 0 and max_accuracy_drop in [0, 1]")


def export_release(state: Path, cfg: ExportConfig, console: Console | None = None) -> dict:
    import torch

    from fedge.tasks import get_task
    from fedge.tasks.training import set_arrays

    console = console or Console(stderr=True)
    state = Path(state).resolve()
    registry = open_registry(state)
    run = registry.run(cfg.run)
    rounds = registry.rounds(cfg.run)
    rec = next((r for r in rounds if r.round == cfg.round), None) if cfg.round else (rounds[-1] if rounds else None)
    if rec is None:
        raise ValueError(f"run {cfg.run} has no completed round {cfg.round or ''}".strip())
    key_path = Path(cfg.key or state / "keys" / "release.key")
    signing_key = load_private_key(key_path) if key_path.exists() else None
    if signing_key is None:
        raise FileNotFoundError(f"no release signing key at {key_path}: run `fedge keys init --out {key_path.parent}`")
    task = get_task(run["task"])
    run_cfg = RunConfig(**run["config"])
    work = state / "exports" / f"run{cfg.run}-round{rec.round}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    # 1. prune (+ 2. recovery rounds on the customers' data, mask held)
    model = task.build_model()
    ckpt, _ = load_checkpoint(Path(rec.checkpoint))
    names = list(model.state_dict())
    set_arrays(model, names, [ckpt[k] for k in names])
    prune_cfg = PruneConfig.parse(cfg.prune)
    prune_model(model, prune_cfg)
    lineage_round, recovery_run = rec.round, None
    if prune_cfg.method != "none" and cfg.recovery_rounds > 0:
        pruned = work / "pruned.safetensors"
        save_checkpoint(pruned, {k: v.detach().numpy() for k, v in model.state_dict().items()}, {"task": task.name})
        console.print(f"[bold]recovery[/bold]: {cfg.recovery_rounds} federated round(s) with the {cfg.prune} mask held")
        code = launch(state, run_cfg.with_(num_rounds=cfg.recovery_rounds, start_round=0, init=str(pruned),
                                           hold_sparsity=True, fedge_run_id=0))
        recovery_run = registry.runs()[-1]["id"]
        if code != 0:
            raise RuntimeError(f"recovery run {recovery_run} failed: {registry.run(recovery_run)['reason']}")
        rec_ckpt, _ = load_checkpoint(Path(registry.last_round(recovery_run).checkpoint))
        set_arrays(model, names, [rec_ckpt[k] for k in names])
    report = sparsity(model, prune_cfg.method)
    console.print(f"[bold]prune[/bold] {cfg.prune}: {report.zeros}/{report.parameters} parameters are zero")

    # 3. ONNX FP32 + parity
    spec = task.input_spec()
    ref_x = task.reference_data().x[:64]
    fp32 = to_onnx(model, ref_x[:2], work / "model.fp32.onnx")
    parity = check_parity(model, fp32, ref_x)
    pre = preprocess(fp32, work / "model.fp32.pre.onnx")
    console.print(f"[bold]onnx[/bold]: opset 17, parity max|diff| {parity.max_abs_diff:.2e}")

    # 4. federated calibration
    job = lambda kind, config, files: run_job(state, work / kind, kind, task.name, config, files,  # noqa: E731
                                              run_cfg.min_clients, cfg.job_timeout)
    mm = job("calibrate-minmax", {}, {"model": pre})
    ranges = merge_minmax([{k: tuple(v) for k, v in r.items()} for r in mm["results"].values()])
    if cfg.calibration != "minmax":
        edges = histogram_edges(ranges, cfg.histogram_bins, cfg.calibration)
        hist = job("calibrate-hist", {"edges": json.dumps({k: v.tolist() for k, v in edges.items()}),
                                      "absolute": uses_abs(cfg.calibration)}, {"model": pre})
        ranges = ranges_from_histograms(merge_histograms(list(hist["results"].values())), edges, ranges, cfg.calibration)
    console.print(f"[bold]calibration[/bold] {cfg.calibration}: {len(ranges)} tensors from {len(mm['results'])} customers")
    bundle = Path(cfg.out).resolve()
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    variants = quantize_variants(pre, ranges, bundle, QuantizeConfig(cfg.calibration))
    shutil.copyfile(fp32, bundle / "model.fp32.onnx")

    # 5. federated accuracy gate
    g = job("gate", {"kinds": json.dumps(["fp32", "int8_cpu", "int8_trt"])},
            {"model-fp32": fp32, "model-int8_cpu": variants["int8_cpu"], "model-int8_trt": variants["int8_trt"]})
    gate = aggregate_gate(g["results"], cfg.max_accuracy_drop)
    console.print(f"[bold]gate[/bold]: FP32 {gate.fp32_accuracy:.4f}, INT8 {gate.int8_accuracy:.4f},"
                  f" drop {gate.accuracy_drop:+.4f} (max {cfg.max_accuracy_drop}), top-1 agreement {gate.agreement:.4f}")
    if not gate.passed:
        shutil.rmtree(bundle, ignore_errors=True)
        per = ", ".join(f"{c}: {v['fp32_accuracy']:.4f} -> {v['int8_accuracy']:.4f}" for c, v in gate.per_customer.items())
        raise GateFailed(f"INT8 accuracy drop {gate.accuracy_drop:.4f} exceeds --max-accuracy-drop "
                         f"{cfg.max_accuracy_drop} (per customer {per}); release refused")

    # 6. signed bundle + registry
    sizes = {p.name: p.stat().st_size for p in bundle.iterdir()}
    manifest = write_bundle(bundle, {
        "model": task.name, "task": task.name,
        "inputs": [{"name": "input", "datatype": spec.datatype, "shape": list(spec.shape)}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, task.num_classes]}],
        "models": {"fp32": "model.fp32.onnx", "int8_cpu": "model.int8.cpu.onnx", "int8_trt": "model.int8.trt.onnx"},
        "labels": list(task.labels), "preprocessing": task.preprocessing(), "max_batch_size": cfg.max_batch_size,
        "lineage": {"run": cfg.run, "round": lineage_round, "checkpoint_sha256": rec.checkpoint_sha256,
                    "recovery_run": recovery_run, "privacy": {"secagg": run_cfg.secagg, "epsilon": rec.privacy.get("epsilon")}},
        "sparsity": report.to_json(),
        "calibration": {"method": cfg.calibration, "tensors": len(ranges), "customers": sorted(mm["results"]),
                        "samples_per_customer_max": 256},
        "gate": gate.to_json(), "sizes": sizes,
        "onnx": {"opset": 17, "parity_max_abs_diff": parity.max_abs_diff},
    }, signing_key)
    summary = {"bundle": str(bundle), "model": manifest.model, "run": cfg.run, "round": lineage_round,
               "gate": gate.to_json(), "sparsity": report.to_json(), "sizes": sizes,
               "int8_size_ratio": sizes["model.int8.cpu.onnx"] / sizes["model.fp32.onnx"]}
    release_id = registry.add_release(cfg.run, lineage_round, str(bundle), sha256_file(bundle / "manifest.json"), summary)
    summary["release"] = release_id
    console.print(f"[bold green]release {release_id}[/bold green] signed: {bundle}")
    return summary
