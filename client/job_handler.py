"""Runs an export job on the customer's data and builds the reply (statistics only, as JSON)."""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from fedge.client.jobs import calibration_histograms, calibration_minmax, forgetting_evaluation, gate_evaluation
from fedge.client.trainer import NodeSettings
from fedge.core.wire import JOB_RESULT_RECORD, FitKey, JobKey, JobKind, TaskKey


def handle(job: ConfigRecord, context) -> RecordDict:
    """One export job: only statistics go back. (A ConfigRecord's values are typed as any record value; each key's
    type is the wire contract's, fedge.core.wire.JobKey.)"""
    rec: Any = job
    result: Any
    settings = NodeSettings.from_node_config(dict(context.node_config))
    task = settings.build_task({FitKey.TASK: str(rec[JobKey.TASK]), **{k: rec[k] for k in TaskKey.ALL if k in rec}})
    train_ds, holdout = settings.load(task)
    kind = str(rec[JobKey.KIND])
    if kind == JobKind.CALIBRATE_MINMAX:
        result = calibration_minmax(bytes(rec[JobKey.MODEL]), train_ds.x)
    elif kind == JobKind.CALIBRATE_HIST:
        result = calibration_histograms(
            bytes(rec[JobKey.MODEL]),
            train_ds.x,
            json.loads(str(rec[JobKey.EDGES])),
            absolute=bool(rec[JobKey.ABSOLUTE]),
        )
    elif kind == JobKind.GATE:
        models = {k: bytes(rec[JobKey.model_of(k)]) for k in json.loads(str(rec[JobKey.KINDS]))}
        result = gate_evaluation(models, holdout.x, holdout.y, int(rec.get(JobKey.REFERENCE_ROWS, 0)))
        if JobKey.model_of(JobKey.PREVIOUS) in rec:  # a run from a release: forgetting, on each file's holdout
            served = "int8_cpu" if "int8_cpu" in models else next(iter(models))
            parts = {k: (h.x, h.y) for k, (_, h) in settings.holdouts(task).items()}
            result["forgetting"] = forgetting_evaluation(
                models[served], bytes(rec[JobKey.model_of(JobKey.PREVIOUS)]), parts
            )
    else:
        raise ValueError(f"unknown export job {kind!r}")
    return RecordDict(
        {JOB_RESULT_RECORD: ConfigRecord({JobKey.CUSTOMER: settings.name, JobKey.RESULT: json.dumps(result)})}
    )
