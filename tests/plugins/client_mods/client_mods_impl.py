"""The test-only mod that tests/plugins/client_mods/sitecustomize.py wraps around fedge's ClientApp."""

from __future__ import annotations

import os
from pathlib import Path

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from fedge.core.wire import FitKey

FAULT_ENV, RECORD_ENV = "FEDGE_TEST_FAULT", "FEDGE_TEST_RECORD"
PARAMS_IN, PARAMS_OUT, WEIGHT_OUT = "fitins.parameters", "fitres.parameters", "fitres.num_examples"


def _arrays(record) -> list[np.ndarray]:
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))


def faulty(arrays: list[np.ndarray], received: list[np.ndarray], fault: str) -> list[np.ndarray]:
    kind, _, k = fault.partition(":")
    if kind == "nan":
        return [np.full_like(a, np.nan) if a.dtype.kind == "f" else a for a in arrays]
    if len(arrays) != len(received):
        raise RuntimeError("the test fault mod alters whole-model updates only (no --freeze)")
    sign = -1.0 if kind == "flip" else 1.0
    return [
        (g.astype(a.dtype) + sign * float(k or 1) * (a - g.astype(a.dtype))).astype(a.dtype)
        for a, g in zip(arrays, received)
    ]


def record(out: Path, name: str, rnd: int, arrays: list[np.ndarray], weight: int) -> None:
    path = out / f"round-{rnd:02d}-{name}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, weight=np.int64(weight), **{f"a{i}": a for i, a in enumerate(arrays)})
    tmp.replace(path)


def fault_and_record(msg: Message, context: Context, call_next) -> Message:
    reply = call_next(msg, context)
    if (
        msg.metadata.message_type != MessageType.TRAIN
        or reply.has_error()
        or PARAMS_OUT not in reply.content.array_records
    ):
        return reply
    arrays = _arrays(reply.content.array_records[PARAMS_OUT])
    if fault := os.environ.get(FAULT_ENV, ""):
        arrays = faulty(arrays, _arrays(msg.content.array_records[PARAMS_IN]), fault)
        reply.content.array_records[PARAMS_OUT] = compat.parameters_to_arrayrecord(ndarrays_to_parameters(arrays), True)
    if out := os.environ.get(RECORD_ENV, ""):
        config = msg.content.config_records.get("fitins.config", {})
        weight = int(reply.content.metric_records[WEIGHT_OUT]["num_examples"])
        record(
            Path(out),
            str(context.node_config.get("name", "customer")),
            int(config.get(FitKey.ROUND, 0)),
            arrays,
            weight,
        )
    return reply


def with_test_mod(module) -> ClientApp:
    """fedge's ClientApp with the test mod innermost (its mods kept, in order)."""
    return ClientApp(client_fn=module._client_fn, mods=[*module.app._mods, fault_and_record])
