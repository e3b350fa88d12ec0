"""Tasks shared by coordinator, client daemon, export and simulation: ``get_task("digits")``,
``get_task("intent")`` or ``get_task("my_pkg.my_mod:MY_TASK")`` for a customer's own model."""
from __future__ import annotations

import importlib

from fedge.core.tasks.base import Task, TensorSpec, TrainDefaults
from fedge.core.tasks.data import DataError, Dataset, split_holdout

__all__ = ["Task", "TensorSpec", "TrainDefaults", "DataError", "Dataset", "split_holdout", "get_task", "BUILTIN"]

BUILTIN = ("digits", "intent")


def get_task(name: str) -> Task:
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
            raise ValueError(f"cannot load custom task {name!r}: {exc}") from exc
        task = obj() if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Task)) else obj
        if not isinstance(task, Task):
            raise ValueError(f"custom task {name!r} is a {type(task).__name__}, not a fedge.core.tasks.Task")
        return task
    raise ValueError(f"unknown task {name!r}: use one of {list(BUILTIN)} or 'module:attribute'")
