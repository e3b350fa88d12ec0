"""Running an export job on the federation from the operator's side: write the request, submit a Flower run
of fedge's app with ``job`` set, wait for the ServerApp's result file (bounded)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.server.fab import write_app, write_overrides
from fedge.server.flwr_cli import FlowerCLI
from fedge.server.run_config import RunConfig


class JobFailed(FedgeUserError, RuntimeError):
    pass


def run_job(
    state: Path,
    job_dir: Path,
    kind: str,
    task: str,
    config: dict,
    files: dict[str, Path],
    min_clients: int,
    timeout: float = 180.0,
) -> dict:
    state, job_dir = Path(state).resolve(), Path(job_dir).resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "result.json").unlink(missing_ok=True)
    names = {}
    for key, path in files.items():
        shutil.copyfile(path, job_dir / f"{key}.bin")
        names[key] = f"{key}.bin"
    (job_dir / "request.json").write_text(json.dumps({"config": config, "files": names}))
    cfg = RunConfig(
        task=task,
        num_rounds=1,
        min_clients=min_clients,
        secagg=False,
        state_dir=str(state),
        job=kind,
        job_dir=str(job_dir),
        round_timeout=timeout,
        wait_clients_timeout=timeout,
    )
    cli = FlowerCLI(state)
    flower_id = cli.run(write_app(state / "app"), write_overrides(job_dir / "config.toml", cfg))
    deadline = time.monotonic() + 2 * timeout + 60
    while time.monotonic() < deadline:
        result = job_dir / "result.json"
        if result.exists():
            doc = json.loads(result.read_text())
            if not doc["ok"]:
                raise JobFailed(f"{kind} job failed: {doc['error']}")
            return doc
        if cli.run_status(flower_id).startswith("finished"):
            time.sleep(1)
            if not result.exists():
                raise JobFailed(f"{kind} job (Flower run {flower_id}) ended without a result")
        time.sleep(0.5)
    raise JobFailed(f"{kind} job did not finish in time")
