"""Runs an export job on the customer's data and builds the reply (statistics only, as JSON)."""
from __future__ import annotations

import json

from flwr.app import ConfigRecord, RecordDict

from fedge.tasks import get_task

from .jobs import calibration_histograms, calibration_minmax, gate_evaluation
from .trainer import NodeSettings

RESULT_RECORD = "fedge-job-result"


def handle(job: ConfigRecord, context) -> RecordDict:
    settings = NodeSettings.from_node_config(dict(context.node_config))
    task = get_task(settings.task)
    if str(job["task"]) != settings.task:
        raise ValueError(f"job is for task {job['task']!r}, customer {settings.name!r} serves {settings.task!r}")
    train_ds, holdout = settings.load(task)
    kind = str(job["kind"])
    if kind == "calibrate-minmax":
        result = calibration_minmax(bytes(job["model"]), train_ds.x)
    elif kind == "calibrate-hist":
        result = calibration_histograms(bytes(job["model"]), train_ds.x, json.loads(str(job["edges"])),
                                        absolute=bool(job["absolute"]))
    elif kind == "gate":
        models = {k: bytes(job[f"model-{k}"]) for k in json.loads(str(job["kinds"]))}
        result = gate_evaluation(models, holdout.x, holdout.y)
    else:
        raise ValueError(f"unknown export job {kind!r}")
    return RecordDict({RESULT_RECORD: ConfigRecord({"customer": settings.name, "result": json.dumps(result)})})
