"""``fedge run launch --from-release N``: the next run starts from what devices serve. Its starting weights are
the release's (the trained arrays of the round it was exported from: adapters and head for a text model, or the
recovery run's last round for a pruned release); the base must be the same (sha256), the LoRA settings are the
release's, and the catalogue may extend the release's (its labels first, in order, then new ones): the head's
rows of the release's labels are kept, the new rows start as a fresh model's (:func:`extend_head`).

The export of such a run knows it (``RunConfig.from_release``): its gate also guards against forgetting
(fedge.export.forgetting).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedge.core.tasks import parse_labels
from fedge.edge_runtime.common.errors import ConfigError, NotFoundError
from fedge.server.registry import Registry
from fedge.server.run_config import RunConfig


def release_start(registry: Registry, cfg: RunConfig) -> RunConfig:
    """``cfg`` set to start from release ``cfg.from_release`` (0: ``cfg`` itself)."""
    if not cfg.from_release:
        return cfg
    if cfg.init:
        raise ConfigError("--from-release and --init both say where the run starts: give one")
    row = next((r for r in registry.releases() if int(r["id"]) == cfg.from_release), None)
    if row is None:
        raise NotFoundError(f"--from-release {cfg.from_release}: no such release")
    manifest = json.loads((Path(row["path"]) / "manifest.json").read_text())
    lineage = manifest.get("lineage", {})
    source = RunConfig(**registry.run(int(lineage["run"]))["config"])
    if source.task != cfg.task:
        raise ConfigError(f"--from-release {cfg.from_release} is a {source.task!r} model, not {cfg.task!r}")
    old = tuple(manifest["labels"])
    new = parse_labels(cfg.labels) or old
    if new[: len(old)] != old:
        raise ConfigError(
            f"--labels must extend release {cfg.from_release}'s catalogue (its {len(old)} labels first, in order:"
            f" {list(old)}), then new ones; got {list(new)}"
        )
    return cfg.with_(
        init=str(_checkpoint(registry, lineage)),
        init_labels=json.dumps(list(old)),
        labels=json.dumps(list(new)) if new != old or cfg.labels else source.labels,
        base_model=cfg.base_model or source.base_model,
        lora_r=source.lora_r,
        lora_alpha=source.lora_alpha,
        lora_targets=source.lora_targets,
        prune=source.prune,
    )


def check_base(registry: Registry, cfg: RunConfig) -> None:
    """A text run from a release must run on the release's base: the same sha256 (after the base is resolved)."""
    if not cfg.from_release or cfg.task != "text":
        return
    row = next(r for r in registry.releases() if int(r["id"]) == cfg.from_release)
    lineage = json.loads((Path(row["path"]) / "manifest.json").read_text())["lineage"]
    source = registry.run(int(lineage["run"]))["config"]
    if source.get("base_sha256") and source["base_sha256"] != cfg.base_sha256:
        raise ConfigError(
            f"--from-release {cfg.from_release} was trained on base {source['base_sha256'][:12]}...; this run's base"
            f" {cfg.base_model} is {cfg.base_sha256[:12]}...: fine-tune the same base (--base-model)"
        )


def _checkpoint(registry: Registry, lineage: dict[str, Any]) -> Path:
    """The checkpoint whose weights the release carries, checked against the sha256 the release names."""
    if lineage.get("recovery_run"):
        last = registry.last_round(int(lineage["recovery_run"]))
        if last is None:
            raise ConfigError(f"the release's recovery run {lineage['recovery_run']} has no round")
        return Path(last.checkpoint)
    rounds = {r.round: r for r in registry.rounds(int(lineage["run"]))}
    rec = rounds.get(int(lineage["round"]))
    if rec is None or rec.checkpoint_sha256 != lineage.get("checkpoint_sha256", rec.checkpoint_sha256):
        raise ConfigError(
            f"the release's checkpoint (run {lineage['run']} round {lineage['round']}) is gone or changed"
        )
    return Path(rec.checkpoint)


def extend_head(
    loaded: dict[str, np.ndarray], fresh: dict[str, np.ndarray], old: int, new: int
) -> dict[str, np.ndarray]:
    """A checkpoint of ``old`` classes fitted to a model of ``new`` >= ``old``: arrays whose first axis is the
    class axis (``old`` there, ``new`` in the fresh model, the rest equal) keep their rows and take the fresh
    model's for the new classes; every other array must match the fresh model's shape."""
    out = {}
    for k, v in fresh.items():
        got = loaded[k]
        if got.shape != v.shape and got.shape[:1] == (old,) and v.shape[:1] == (new,) and got.shape[1:] == v.shape[1:]:
            grown = v.copy()
            grown[:old] = got
            out[k] = grown
        else:
            out[k] = got
    return out
