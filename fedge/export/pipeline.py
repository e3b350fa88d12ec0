"""``fedge export``: the global model of a run becomes a signed INT8 edge release, stage by stage
(fedge.export.stages: each reads the artifact the one before wrote and writes its own).

    prune -> federated recovery rounds (mask held) -> ONNX FP32 (+ parity) -> federated calibration
          -> two INT8 QDQ models -> federated accuracy gate -> signed bundle -> registry
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError, MissingFileError
from fedge.edge_runtime.distribution.bundle import load_private_key, sha256_file
from fedge.edge_runtime.distribution.manifest import Manifest
from fedge.export import stages
from fedge.export.profiles import profile_of
from fedge.export.prune import PruneConfig
from fedge.export.quantize import QuantizeConfig
from fedge.export.stages import Say, Source
from fedge.server.run_config import RunConfig
from fedge.server.runs import RunProgress, open_registry


@dataclass(frozen=True)
class ExportConfig:
    run: int
    out: Path
    round: int | None = None  # default: the run's last completed round
    prune: str = "none"  # none | 2:4 | unstructured:P
    recovery_rounds: int = 0
    calibration: str = "minmax"  # minmax | entropy | percentile
    histogram_bins: int = 2048
    max_accuracy_drop: float = 0.01
    max_forgetting: float | None = None  # from a release: most accuracy lost on original holdouts (None: the run's)
    key: Path | None = None  # release signing key (default STATE/keys/release.key)
    max_batch_size: int = 64
    reference_rows: int = 128  # holdout rows per customer the gate also checks by the ONNX specification
    job_timeout: float = 180.0

    def __post_init__(self) -> None:
        PruneConfig.parse(self.prune)
        QuantizeConfig(self.calibration)
        if self.recovery_rounds < 0 or not 0 <= self.max_accuracy_drop <= 1 or self.reference_rows < 0:
            raise ConfigError("recovery_rounds and reference_rows must be >= 0 and max_accuracy_drop in [0, 1]")
        if self.max_forgetting is not None and not 0 <= self.max_forgetting <= 1:
            raise ConfigError(f"--max-forgetting must be in [0, 1], got {self.max_forgetting}")


@dataclass(frozen=True)
class Release:
    """A signed release, as the registry records it."""

    id: int
    bundle: Path
    model: str
    run: int
    round: int  # the round of the run it was made from
    gate: dict  # the federated gate's report (GateReport.to_json)
    sparsity: dict
    sizes: dict[str, int]  # bytes per model file

    @property
    def int8_size_ratio(self) -> float:
        return self.sizes["model.int8.cpu.onnx"] / self.sizes["model.fp32.onnx"]

    def to_json(self) -> dict:
        return {
            "bundle": str(self.bundle),
            "model": self.model,
            "run": self.run,
            "round": self.round,
            "gate": self.gate,
            "sparsity": self.sparsity,
            "sizes": self.sizes,
            "int8_size_ratio": self.int8_size_ratio,
            "release": self.id,
        }


def export_release(
    state: Path, cfg: ExportConfig, say: Say = lambda text: None, progress: RunProgress | None = None
) -> Release:
    """Prune -> recover -> ONNX FP32 -> calibrate -> INT8 (QDQ) -> accuracy gate -> signed bundle.
    ``say`` hears each stage's outcome; ``progress`` follows the recovery rounds (default: nothing shown)."""
    src = open_source(Path(state).resolve(), cfg)
    if profile_of(src.task).mask_in_model and cfg.prune != "none":
        src = stages.masked(src, cfg.prune)  # the mask lives in the model: recovery rounds train under it
    key = signing_key(src.state, cfg)
    work = fresh_dir(src.state / "exports" / f"run{cfg.run}-round{src.round.round}")
    pruned = stages.prune(src.task, Path(src.round.checkpoint), cfg.prune, work / "pruned.safetensors")
    weights, recovery_run = stages.recover(src, pruned, cfg.prune, cfg.recovery_rounds, progress or RunProgress(), say)
    report = stages.measure_sparsity(src.task, weights, cfg.prune)
    say(f"[bold]prune[/bold] {cfg.prune}: {report.zeros}/{report.parameters} parameters are zero")
    fp32, parity = stages.onnx(src.task, weights, work / "model.fp32.onnx", say)
    calibration = stages.calibrate(
        src, fp32, cfg.calibration, cfg.histogram_bins, cfg.job_timeout, work / "calibration.json", say
    )
    bundle = fresh_dir(Path(cfg.out).resolve())
    models = stages.quantize(calibration, fp32, bundle)
    try:
        gate = stages.gate(
            src,
            models,
            cfg.max_accuracy_drop,
            cfg.reference_rows,
            cfg.job_timeout,
            work / "gate.json",
            say,
            src.run_config.max_forgetting if cfg.max_forgetting is None else cfg.max_forgetting,
        )
    except stages.GateFailed:
        shutil.rmtree(bundle, ignore_errors=True)
        raise
    lineage = {
        "run": cfg.run,
        "round": src.round.round,
        "checkpoint_sha256": src.round.checkpoint_sha256,
        "recovery_run": recovery_run,
        "privacy": {"secagg": src.run_config.secagg, "epsilon": src.round.privacy.get("epsilon")},
    }
    manifest = stages.sign(src, bundle, lineage, calibration, gate, report, parity, cfg.max_batch_size, key)
    return register(src, cfg, bundle, manifest, say)


def open_source(state: Path, cfg: ExportConfig) -> Source:
    """The run's round to export (its last completed one unless ``cfg.round`` says which)."""
    registry = open_registry(state)
    run = registry.run(cfg.run)
    rounds = registry.rounds(cfg.run)
    rec = next((r for r in rounds if r.round == cfg.round), None) if cfg.round else (rounds[-1] if rounds else None)
    if rec is None:
        raise ConfigError(f"run {cfg.run} has no completed round {cfg.round or ''}".strip())
    run_config = RunConfig(**run["config"])
    return Source(state, registry, cfg.run, rec, run_config.make_task(), run_config)  # the run's labels and base


def signing_key(state: Path, cfg: ExportConfig):
    key_path = Path(cfg.key or state / "keys" / "release.key")
    if not key_path.exists():
        raise MissingFileError(f"no release signing key at {key_path}: run `fedge keys init --out {key_path.parent}`")
    return load_private_key(key_path)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def register(src: Source, cfg: ExportConfig, bundle: Path, manifest: Manifest, say: Say) -> Release:
    """The release in the registry (the release service offers it to devices from there)."""
    release = Release(
        0, bundle, manifest.model, cfg.run, manifest.lineage["round"], manifest.gate, manifest.sparsity, manifest.sizes
    )
    summary = {k: v for k, v in release.to_json().items() if k != "release"}
    release_id = src.registry.add_release(
        cfg.run, release.round, str(bundle), sha256_file(bundle / "manifest.json"), summary
    )
    say(f"[bold green]release {release_id}[/bold green] signed: {bundle}")
    return dataclasses.replace(release, id=release_id)
