"""Export jobs on the federation (federated calibration, the accuracy gate): the coordinator sends one QUERY
message per connected customer and collects each customer's statistics. Executed inside Flower's ServerApp
process (a Flower run with ``job`` set); the request and the merged result are files in ``job_dir``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType

from fedge.core.wire import JOB_RECORD, JOB_RESULT_RECORD, JobKey
from fedge.server.fast_grid import FastPollGrid
from fedge.server.run_config import RunConfig


def run_job(grid, context) -> None:
    cfg = RunConfig.from_flower(dict(context.run_config))
    job_dir = Path(cfg.job_dir)
    try:
        result = _collect(FastPollGrid(grid), cfg, job_dir)
    except Exception as exc:
        (job_dir / "result.json").write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        raise
    (job_dir / "result.json").write_text(json.dumps({"ok": True, **result}))


def _collect(grid, cfg: RunConfig, job_dir: Path) -> dict:
    request = json.loads((job_dir / "request.json").read_text())
    record = ConfigRecord({JobKey.KIND: cfg.job, JobKey.TASK: cfg.task, **request.get("config", {})})
    for key, filename in request.get("files", {}).items():
        record[key] = (job_dir / filename).read_bytes()
    deadline = time.monotonic() + cfg.wait_clients_timeout
    while len(nodes := list(grid.get_node_ids())) < cfg.min_clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} customer(s) connected; the job needs {cfg.min_clients}")
        time.sleep(0.5)
    messages = [
        Message(content=RecordDict({JOB_RECORD: record}), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=cfg.round_timeout))
    results, failures = {}, []
    for msg in replies:
        if msg.has_error():
            failures.append(f"node {msg.metadata.src_node_id}: {msg.error.reason}")
            continue
        rec = msg.content.config_records[JOB_RESULT_RECORD]
        results[str(rec[JobKey.CUSTOMER])] = json.loads(str(rec[JobKey.RESULT]))
    answered = {m.metadata.src_node_id for m in replies}
    failures += [f"node {n}: no reply within {cfg.round_timeout:.0f}s" for n in nodes if n not in answered]
    if len(results) < cfg.min_clients:
        raise RuntimeError(
            f"{len(results)} customer(s) answered the {cfg.job} job, {cfg.min_clients} needed; {failures}"
        )
    return {"results": results, "failures": failures}
