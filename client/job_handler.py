"""Runs an export job on the customer's data and builds the reply (statistics only, as JSON)."""
from __future__ import annotations

import json

from flwr.app import ConfigRecord, RecordDict

from fedge.client.jobs import calibration_histograms, calibration_minmax, gate_evaluation
from fedge.client.trainer import NodeSettings
from fedge.core.wire import JOB_RESULT_RECORD, FitKey, JobKey, JobKind, TaskKey


def handle(job: ConfigRecord, context) -> RecordDict:
    settings = NodeSettings.from_node_config(dict(context.node_config))
    task = settings.build_task({FitKey.TASK: str(job[JobKey.TASK]), **{k: job[k] for k in TaskKey.ALL if k in job}})
    train_ds, holdout = settings.load(task)
    kind = str(job[JobKey.KIND])
    if kind == JobKind.CALIBRATE_MINMAX:
        result = calibration_minmax(bytes(job[JobKey.MODEL]), train_ds.x)
    elif kind == JobKind.CALIBRATE_HIST:
        result = calibration_histograms(bytes(job[JobKey.MODEL]), train_ds.x, json.loads(str(job[JobKey.EDGES])),
                                        absolute=bool(job[JobKey.ABSOLUTE]))
    elif kind == JobKind.GATE:
        models = {k: bytes(job[JobKey.model_of(k)]) for k in json.loads(str(job[JobKey.KINDS]))}
        result = gate_evaluation(models, holdout.x, holdout.y, int(job.get(JobKey.REFERENCE_ROWS, 0)))
    else:
        raise ValueError(f"unknown export job {kind!r}")
    return RecordDict({JOB_RESULT_RECORD: ConfigRecord({JobKey.CUSTOMER: settings.name,
                                                       JobKey.RESULT: json.dumps(result)})})
