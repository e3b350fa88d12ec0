"""Tasks shared by coordinator, client daemon, export and simulation: ``get_task("digits")``,
``get_task("intent")``, ``get_task("text")`` or ``get_task("my_pkg.my_mod:MY_TASK")`` for a customer's own model;
``get_task(name, settings)`` with a run's task settings (fedge.core.wire.TaskKey: its label catalogue, its base
model's identity, its LoRA settings)."""

from __future__ import annotations

import dataclasses
import importlib
import json

from fedge.core.tasks.base import Task, TaskKey, TensorSpec, TrainDefaults
from fedge.core.tasks.data import DataError, Dataset, split_holdout
from fedge.edge_runtime.common.errors import ConfigError

__all__ = ["BUILTIN", "DataError", "Dataset", "Task", "TensorSpec", "TrainDefaults", "get_task", "split_holdout"]

BUILTIN = ("digits", "intent", "text")


def get_task(name: str, settings: dict | None = None, base_dir: str = "") -> Task:
    """The task ``name``; with a run's ``settings`` (TaskKey -> value), configured as the run says: its labels, and
    for ``text`` the LoRA settings and the base at ``base_dir`` (default location if empty), checked against the
    run's base sha256 (BaseModelError when it differs)."""
    task = _builtin_or_custom(name)
    settings = settings or {}
    labels = parse_labels(str(settings.get(TaskKey.LABELS, "") or ""))
    if labels:
        task = dataclasses.replace(task, labels=labels)
    if name == "text":
        from fedge.core.tasks.encoder import LoraSettings, check_base
        from fedge.core.tasks.text import TextTask

        assert isinstance(task, TextTask)
        lora = task.lora
        targets = str(settings.get(TaskKey.LORA_TARGETS, ",".join(lora.targets)))
        lora = LoraSettings(
            r=int(settings.get(TaskKey.LORA_R, lora.r)),
            alpha=int(settings.get(TaskKey.LORA_ALPHA, lora.alpha)),
            targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
        )
        task = dataclasses.replace(task, base_dir=base_dir, lora=lora, prune=str(settings.get(TaskKey.PRUNE, "")))
        check_base(task.base, str(settings.get(TaskKey.BASE_SHA256, "")))
    return task


def parse_labels(text: str) -> tuple[str, ...]:
    """A label catalogue as the wire carries it (a JSON list) -> the labels; "" -> () (the task's own)."""
    if not text:
        return ()
    labels = json.loads(text)
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError(f"a label catalogue is a JSON list of non-empty strings, got {text[:80]!r}")
    return tuple(labels)


def _builtin_or_custom(name: str) -> Task:
    if name == "text":
        from fedge.core.tasks.text import TextTask

        return TextTask()
    if name == "digits":
        from fedge.core.tasks.digits import DigitsTask

        return DigitsTask()
    if name == "intent":
        from fedge.core.tasks.intent import IntentTask

        return IntentTask()
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load custom task {name!r}: {exc}") from exc
        task = obj() if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Task)) else obj
        if not isinstance(task, Task):
            raise ConfigError(f"custom task {name!r} is a {type(task).__name__}, not a fedge.core.tasks.Task")
        return task
    raise ConfigError(f"unknown task {name!r}: use one of {list(BUILTIN)} or 'module:attribute'")
