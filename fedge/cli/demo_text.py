"""``fedge demo`` (the default, ``--task text``): intent classification for customer service, end to end on loopback.

Three customers hold a few labelled examples of the shipped intent catalogue (at most 16 per intent for training,
all customers together, split non-IID) -> coordinator (TLS, SuperNode auth) -> 3 client daemons -> a federated run
that fine-tunes the pretrained all-MiniLM-L6-v2 with LoRA under SecAgg+ (only adapters and head travel) -> INT8
export with federated calibration and gate -> edge serving: typed sentences, tokenized on the device, over gRPC
and REST.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from rich.console import Console

from fedge.cli.demo import CUSTOMERS, DemoConfig, export_stage, run_and_report, served

SENTENCES = (
    "I think someone stole my credit card",
    "how much money is left in my savings account",
    "the internet has been down all morning in my street",
    "I want to end my contract",
    "can you send 40 euros to my brother",
    "roaming charges in Italy?",
)


def write_fewshot_data(out: Path, per_label: int, alpha: float, seed: int) -> list[Path]:
    """``per_label`` examples of each intent from the shipped data (seeded), split non-IID (Dirichlet ``alpha``)
    into one CSV per customer; the holdout each customer keeps aside comes out of its own file."""
    import numpy as np

    from fedge.core.tasks.intent import IntentTask
    from fedge.core.tasks.partition import dirichlet_partition

    texts, labels = IntentTask().reference_texts()
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.permutation([i for i, lab in enumerate(labels) if lab == name])[:per_label]
            for name in sorted(set(labels))
        ]
    )
    y = np.array([sorted(set(labels)).index(labels[i]) for i in chosen])
    (out / "data").mkdir(parents=True, exist_ok=True)
    files = []
    for name, idx in zip(CUSTOMERS, dirichlet_partition(y, len(CUSTOMERS), alpha, seed)):
        path = out / "data" / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((texts[chosen[i]], labels[chosen[i]]) for i in sorted(idx))
        files.append(path)
    return files


def run_text_demo(cfg: DemoConfig) -> int:
    from fedge.cli.cluster import LocalFederation
    from fedge.core.tasks.encoder import default_base_dir
    from fedge.server.run_config import RunConfig
    from fedge.server.runs import plot

    console = Console() if sys.stdout.isatty() else Console(width=120)
    out = Path(cfg.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    files = write_fewshot_data(out, per_label=20, alpha=cfg.alpha, seed=cfg.seed)
    console.rule("fedge demo: intent classification, federated LoRA fine-tuning of a pretrained encoder")
    console.print(f"pretrained base: {default_base_dir()} (all-MiniLM-L6-v2, loaded offline)")
    for f in files:
        console.print(f"customer data: {f} ({sum(1 for _ in open(f, encoding='utf-8')) - 1} labelled utterances)")
    with LocalFederation(out) as fed:
        coordinator = fed.start_coordinator()
        console.print(f"coordinator (Flower SuperLink, TLS + SuperNode auth) on {fed.address}, pid {coordinator.pid}")
        for name, f in zip(CUSTOMERS, files):
            proc = fed.start_client(name, f, "text", extra=["--audit-log", str(out / f"egress-{name}.jsonl")])
            console.print(f"client daemon {name} (Flower SuperNode), pid {proc.pid}")
        run_cfg = RunConfig(
            task="text",
            num_rounds=cfg.rounds,
            min_clients=len(CUSTOMERS),
            secagg=cfg.secagg,
            seed=cfg.seed,
            round_timeout=180,
        )
        console.print(
            f"run: LoRA r={run_cfg.lora_r} on {run_cfg.lora_targets} + head, SecAgg+"
            f" {'on' if cfg.secagg else 'off'}, {cfg.rounds} rounds; the frozen base never travels"
        )
        code, registry, run_id = run_and_report(console, fed, run_cfg, out)
        if code != 0:
            return code
        last = registry.rounds(run_id)[-1]
        sent = (
            {c: m.get("sent_bytes") for c, m in last.client_metrics.items()}
            if isinstance(last.client_metrics, dict)
            else {}
        )
        console.print(
            f"federated accuracy (union of the customers' holdouts): [bold]{last.accuracy:.4f}[/bold];"
            f" bytes each customer sent in the last round: {sent}"
        )
        console.print(f"plot: {plot(registry, run_id, out / 'run.png')}")
        bundle = export_stage(console, fed, run_id, cfg.with_prune("none", 0))
        text_edge_stage(console, fed, bundle)
    return 0


def text_edge_stage(console, fed, bundle) -> None:
    import numpy as np

    with served(console, fed, bundle, "tokenization on the device, ") as (server, client, name):
        texts = np.array([s.encode() for s in SENTENCES], dtype=object).reshape(-1, 1)
        got = client.infer(name, {"text": texts})["label"].reshape(-1)
        for sentence, label in zip(SENTENCES, got):
            console.print(f"  gRPC  {sentence!r:55} -> [bold]{label.decode()}[/bold]")
        console.print(
            f"  REST  {SENTENCES[0]!r:55} -> [bold]{_label_over_http(server.http_url, name, SENTENCES[0])}[/bold]"
        )


def _label_over_http(url: str, model: str, sentence: str) -> str:
    """What curl or tritonclient.http would send: one JSON inference request with a BYTES input."""
    import json
    import urllib.request

    doc = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [sentence]}],
        "outputs": [{"name": "label"}],
    }
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/infer", json.dumps(doc).encode(), timeout=30) as resp:
        return json.loads(resp.read())["outputs"][0]["data"][0]
