"""``fedge demo`` (what ``make demo`` runs): the whole pipeline on loopback, as separate real processes.

digits split non-IID across 3 customers -> CA + certificates -> coordinator (TLS, SuperNode auth) -> 3 client
daemons (one with a privacy limit) -> a federated run with SecAgg+ and DP-SGD at ε <= 8 -> round table with ε,
centralized baseline, plot, the customer's ledger -> INT8 export -> edge serving over gRPC.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from fedge.core.tasks.intent import IntentTask

CUSTOMERS = ("acme-bank", "globex-telecom", "initech-insurance")


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo-out")
    rounds: int = 6
    secagg: bool = True
    dp_sgd_epsilon: float = 8.0  # 0: no DP-SGD (non-private run)
    prune: str = "2:4"
    recovery_rounds: int = 1
    alpha: float = 0.5  # Dirichlet non-IID across customers
    seed: int = 0
    task: str = "text"  # text: intent classification on a pretrained encoder (fedge.cli.demo_text); or digits

    def with_prune(self, prune: str, recovery_rounds: int) -> DemoConfig:
        import dataclasses

        return dataclasses.replace(self, prune=prune, recovery_rounds=recovery_rounds)


def write_customer_data(
    out: Path, alpha: float, seed: int, task_name: str = "digits", names: tuple[str, ...] = CUSTOMERS
) -> list[Path]:
    """The task's shipped reference data split non-IID (Dirichlet ``alpha`` over labels) into one private data
    file per customer: .npz for digits, text,label CSV for intent."""
    import csv

    import numpy as np

    from fedge.core.tasks import get_task
    from fedge.core.tasks.partition import dirichlet_partition

    task = get_task(task_name)
    out = Path(out) / "data"
    out.mkdir(parents=True, exist_ok=True)
    if task_name == "intent":
        texts, labels = cast(IntentTask, task).reference_texts()
        y = np.array([task.labels.index(lab) for lab in labels])
    else:
        ref = task.reference_data()
        y = ref.y
    files = []
    for name, idx in zip(names, dirichlet_partition(y, len(names), alpha, seed)):
        if task_name == "intent":
            path = out / f"{name}.csv"
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["text", "label"])
                w.writerows((texts[i], labels[i]) for i in sorted(idx))
        else:
            path = out / f"{name}.npz"
            task.write_data(path, ref.take(idx))
        files.append(path)
    return files


def run_demo(cfg: DemoConfig) -> int:
    import sys

    from fedge.cli.cluster import LocalFederation
    from fedge.core.baseline import centralized_accuracy
    from fedge.core.tasks import get_task
    from fedge.server.run_config import RunConfig
    from fedge.server.runs import plot

    if cfg.task == "text":
        from fedge.cli.demo_text import run_text_demo

        return run_text_demo(cfg)
    console = Console() if sys.stdout.isatty() else Console(width=120)  # logs: no folding at 80 columns
    out = Path(cfg.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    files = write_customer_data(out, cfg.alpha, cfg.seed)
    console.rule("fedge demo: federated training")
    for f in files:
        console.print(f"customer data: {f}")
    with LocalFederation(out) as fed:
        coordinator = fed.start_coordinator()
        console.print(f"coordinator (Flower SuperLink, TLS + SuperNode auth) on {fed.address}, pid {coordinator.pid}")
        for name, f in zip(CUSTOMERS, files):
            budget = ["--max-epsilon", "20"] if name == CUSTOMERS[0] and cfg.dp_sgd_epsilon > 0 else []
            proc = fed.start_client(name, f, "digits", extra=budget)
            console.print(
                f"client daemon {name} (Flower SuperNode), pid {proc.pid}"
                + (" with its own privacy limit ε <= 20 at δ = 1e-5" if budget else "")
            )
        dp: dict[str, Any] = DPSGD_DEMO | {"dp_sgd_epsilon": cfg.dp_sgd_epsilon} if cfg.dp_sgd_epsilon > 0 else {}
        run_cfg = RunConfig(
            task="digits",
            num_rounds=cfg.rounds,
            min_clients=len(CUSTOMERS),
            secagg=cfg.secagg,
            seed=cfg.seed,
            round_timeout=120,
            **dp,
        )
        if cfg.dp_sgd_epsilon > 0:
            console.print(
                f"DP-SGD (Opacus) in every customer's training, noise set by each customer for ε <="
                f" {cfg.dp_sgd_epsilon:g} over {cfg.rounds} rounds (δ = 1e-5); SecAgg+ {'on' if cfg.secagg else 'off'}"
            )
        code, registry, run_id = run_and_report(console, fed, run_cfg, out)
        if code != 0:
            return code
        task = get_task("digits")
        central = centralized_accuracy(task, files, epochs=cfg.rounds * task.defaults.local_epochs, seed=cfg.seed)
        final = registry.rounds(run_id)[-1].accuracy
        png = plot(registry, run_id, out / "run.png", baseline=central)
        console.print(
            f"federated accuracy (union of the customers' holdouts) after {cfg.rounds} rounds: "
            f"[bold]{final:.4f}[/bold]; centralized, non-private, on the same split: {central:.4f}"
        )
        console.print(f"plot: {png}")
        if cfg.dp_sgd_epsilon > 0:
            privacy_stage(console, fed, registry, run_id)
        bundle = export_stage(console, fed, run_id, cfg)
        edge_stage(console, fed, bundle, files)
    return 0


def run_and_report(console, fed, run_cfg, out: Path):
    """Launch the demo's run, follow it, print its rounds -> (exit code, registry, run id)."""
    from fedge.server.runs import launch, open_registry, print_status

    outcome = launch(fed.state, run_cfg)
    registry, run_id, code = open_registry(fed.state), outcome.run_id, outcome.exit_code
    print_status(registry, run_id, as_json=False)
    if code != 0:
        console.print(f"[red]the run failed; logs in {out / 'logs'} and {fed.state / 'logs'}[/red]")
    return code, registry, run_id


# DP-SGD settings that learn on 3 small non-IID customers (tuned on digits: larger batches, a tight clip)
DPSGD_DEMO = {"dp_sgd": True, "dp_sgd_clip": 0.3, "batch_size": 32, "lr": 0.005, "local_epochs": 8}


def privacy_stage(console, fed, registry, run_id: int) -> None:
    from fedge.client.ledger import Ledger

    last = registry.rounds(run_id)[-1].privacy
    per = ", ".join(f"{k} {v:.3f}" for k, v in sorted(last.get("customers", {}).items()))
    console.print(
        f"ε spent (δ = {last.get('delta')}, {last.get('accountant')}): [bold]{last.get('epsilon'):.3f}[/bold]"
        f" at most; per customer: {per}"
    )
    doc = Ledger(fed.root / "clients" / CUSTOMERS[0]).document()
    console.print(
        f"{CUSTOMERS[0]}'s own ledger (hash chain verified): total ε {doc['total_epsilon']:.3f} of its limit 20"
        f" over {len(doc['runs'])} run(s) -- `fedge client ledger --state {fed.root / 'clients' / CUSTOMERS[0]}`"
    )


def export_stage(console, fed, run_id: int, cfg: DemoConfig):
    from fedge.edge_runtime.distribution.bundle import generate_keys
    from fedge.export.pipeline import ExportConfig, export_release
    from fedge.server.runs import ConsoleProgress

    console.rule("export: prune, federated calibration, INT8, federated gate, signed bundle")
    generate_keys(fed.state / "keys")
    release = export_release(
        fed.state,
        ExportConfig(run=run_id, out=fed.root / "release", prune=cfg.prune, recovery_rounds=cfg.recovery_rounds),
        say=console.print,
        progress=ConsoleProgress(),
    )
    g = release.gate
    console.print(
        f"INT8 model is {release.int8_size_ratio:.2f}x the FP32 size; gate: FP32 {g['fp32_accuracy']:.4f},"
        f" INT8 {g['int8_accuracy']:.4f} (drop {g['accuracy_drop']:+.4f}), top-1 agreement {g['top1_agreement']:.4f}"
    )
    return fed.root / "release"


@contextlib.contextmanager
def served(console, fed, bundle, what: str):
    """The release verified and installed into an edge repository and served by `fedge edge serve` -> (the
    server, a gRPC client, the model's name) while the block runs; stopped by PID after."""
    from fedge.cli.cluster import EdgeServerProcess
    from fedge.edge_runtime.distribution.bundle import load_public_key
    from fedge.edge_runtime.distribution.repository import install_bundle
    from fedge.edge_runtime.tools.grpc_client import EdgeClient

    console.rule(f"edge: verified install, {what}KServe v2 serving (gRPC and HTTP)")
    repo, trust = fed.root / "edge-repo", fed.state / "keys" / "release.pub"
    name, version = install_bundle(repo, bundle, load_public_key(trust))
    server = EdgeServerProcess(repo, trust, fed.root / "logs" / "edge.out")
    try:
        client = EdgeClient(server.url)
        meta = client.metadata(name)
        console.print(
            f"edge server pid {server.pid} on {server.url}: {name} v{version} on"
            f" {meta.properties['backend']} ({meta.properties['backend_reason']});"
            f" input {[(t.name, t.datatype) for t in meta.inputs]}"
        )
        yield server, client, name
        client.close()
    finally:
        server.stop()


def edge_stage(console, fed, bundle, files) -> None:
    from fedge.core.tasks import get_task, split_holdout

    with served(console, fed, bundle, "") as (server, client, name):
        _, holdout = split_holdout(get_task("digits").load_data(files[0]))
        x, y = holdout.x[:8], holdout.y[:8]
        out = client.infer(name, {"input": x})
        pred = [int(v.decode()) if isinstance(v, bytes) else int(v) for v in out["label"].reshape(-1)]
        console.print(f"predictions over gRPC for 8 of {files[0].stem}'s holdout digits: {pred}")
        console.print(f"true labels:                                       {y.tolist()}")
        console.print(
            f"the same over KServe v2 REST (http://{server.http_url}, JSON):"
            f" {_labels_over_http(server.http_url, name, x)}"
        )


def _labels_over_http(url: str, model: str, x) -> list[int]:
    """What curl or tritonclient.http would send: one JSON inference request to the REST endpoint."""
    import json
    import urllib.request

    doc = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}],
        "outputs": [{"name": "label"}],
    }
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/infer", json.dumps(doc).encode(), timeout=30) as resp:
        return [int(v) for v in json.loads(resp.read())["outputs"][0]["data"]]
