"""The text task: federated LoRA fine-tuning of all-MiniLM-L6-v2 on few-shot intent data and its INT8 release.

Accuracy: three customers (client daemons on loopback, TLS + node auth, SecAgg+) hold at most 16 labelled training
examples per intent in total (20 per intent dealt Dirichlet(0.5), each keeping 20% of its file as its holdout);
federated LoRA + head against the TextCNN (intent task) federated on the same files and against centralized LoRA
on the union, over several splits. Then the INT8 release of the first split's run (federated calibration and gate)
and its speed on ONNX Runtime (1 thread, batch 32 x 128 tokens and one short utterance), and the edge server
serving it (tokenizing on the device) against the same calls in-process."""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .report import Section
from .timing import interleaved, stats

ROUNDS = 5
SHORT = "I lost my credit card"


def _federation(work: Path, task: str, files: list[Path]):
    from fedge.cli.cluster import LocalFederation
    from fedge.cli.demo import CUSTOMERS

    fed = LocalFederation(work)
    fed.start_coordinator()
    for name, f in zip(CUSTOMERS, files):
        fed.start_client(name, f, task)
    return fed


def _run(fed, task: str, rounds: int, seed: int) -> int:
    from fedge.server.run_config import RunConfig
    from fedge.server.runs import launch

    with contextlib.redirect_stdout(io.StringIO()):
        outcome = launch(
            fed.state, RunConfig(task=task, num_rounds=rounds, min_clients=3, secagg=True, seed=seed, round_timeout=300)
        )
    run_id = outcome.run_id
    if not outcome.ok:
        raise RuntimeError(f"{task} run {run_id} failed; logs in {fed.root / 'logs'} and {fed.state / 'logs'}")
    return run_id


def accuracy(work: Path, seeds: tuple[int, ...], rounds: int, progress, t) -> tuple[list[dict], dict]:
    """Per split: the federated text and intent runs and centralized LoRA -> table rows, and the first split's
    federation state, run and INT8 release (exported while its customers are up: calibration and gate are theirs)."""
    from fedge.cli.demo_text import write_fewshot_data
    from fedge.core.baseline import centralized_accuracy
    from fedge.core.tasks import get_task
    from fedge.server.runs import open_registry

    rows, first = [], {}
    text_task = get_task("text")
    for seed in seeds:
        files = write_fewshot_data(work / f"split{seed}", per_label=20, alpha=0.5, seed=seed)
        fed = _federation(work / f"text{seed}", "text", files)
        try:
            text_run = _run(fed, "text", rounds, seed)
            if not first:
                first = {"state": fed.state, "run": text_run, "files": files}
                first["release"] = release(work, first)
                progress.advance(t)
        finally:
            fed.stop_all()
        text_rounds = open_registry(fed.state).rounds(text_run)
        progress.advance(t)
        fed = _federation(work / f"intent{seed}", "intent", files)
        try:
            intent_rounds = open_registry(fed.state).rounds(_run(fed, "intent", rounds, seed))
        finally:
            fed.stop_all()
        central = centralized_accuracy(text_task, files, epochs=rounds * text_task.defaults.local_epochs, seed=seed)
        progress.advance(t)
        sent = [m.get("sent_bytes", 0) for r in text_rounds for m in r.client_metrics.values()]
        rows.append(
            {
                "split (seed)": seed,
                "training examples": _train_examples(text_task, files),
                "LoRA + head, per round": " ".join(f"{r.accuracy:.3f}" for r in text_rounds),
                "LoRA + head": text_rounds[-1].accuracy,
                "best round": max(r.accuracy for r in text_rounds),
                "TextCNN (intent task)": intent_rounds[-1].accuracy,
                "centralized LoRA": central,
                "s/round (SecAgg+)": statistics.median(r.wall_s for r in text_rounds),
                "bytes/client/round": max(sent),
            }
        )
    return rows, first


def _train_examples(task, files: list[Path]) -> int:
    from fedge.core.tasks import split_holdout

    return sum(len(split_holdout(task.load_data(f))[0]) for f in files)


def release(work: Path, first: dict):
    from fedge.edge_runtime.distribution.bundle import generate_keys
    from fedge.export.pipeline import ExportConfig, export_release

    generate_keys(first["state"] / "keys")
    with contextlib.redirect_stdout(io.StringIO()):
        return export_release(
            first["state"], ExportConfig(run=first["run"], out=work / "release", prune="none", max_accuracy_drop=0.02)
        )


def int8_speed(rel, state: Path, quick: bool) -> tuple[list[dict], dict]:
    """ONNX Runtime (1 thread) FP32 as exported and fused, both INT8 variants, and PyTorch eager FP32 (the merged
    model, 1 thread): batch 32 x 128 tokens and one short utterance, interleaved medians."""
    import torch

    from bench.inference import ort_runner
    from fedge.export.stages import load_model
    from fedge.server.run_config import RunConfig
    from fedge.server.runs import open_registry

    torch.set_num_threads(1)
    run = open_registry(state).run(rel.run)
    task = RunConfig(**run["config"]).make_task()
    merged = task.export_module(load_model(task, Path(open_registry(state).rounds(rel.run)[-1].checkpoint))).eval()
    work = next((state / "exports").iterdir())
    files = {
        "ONNX Runtime FP32 (as exported)": work / "model.fp32.onnx",
        "ONNX Runtime FP32 (fused)": rel.bundle / "model.fp32.onnx",
        "ONNX Runtime INT8 (CPU variant)": rel.bundle / "model.int8.cpu.onnx",
        "ONNX Runtime INT8 (TensorRT form)": rel.bundle / "model.int8.trt.onnx",
    }
    runners = {name: ort_runner(path) for name, path in files.items()}

    def eager(x):
        with torch.inference_mode():
            return merged(torch.from_numpy(x))

    runners["PyTorch eager FP32"] = eager
    inputs = {
        "batch 32 x 128 tokens": np.random.default_rng(0).integers(1000, 30000, (32, 128)).astype(np.int64),
        f"1 x {len(task.encode_texts([SHORT])[0])} tokens ({SHORT!r})": task.encode_texts([SHORT]),
    }
    rows, med = [], {}
    for label, x in inputs.items():
        timed = {n: (lambda fn=fn, x=x: fn(x)) for n, fn in runners.items()}
        s = interleaved(timed, reps=3 if quick else 12, target_s=0.3)
        for name, ts in s.items():
            med[(label, name)] = stats(ts)["median"]
            rows.append(
                {
                    "input": label,
                    "model": name,
                    "median ms": med[(label, name)] * 1e3,
                    "size MB": (files[name].stat().st_size / 1e6) if name in files else None,
                }
            )
    return rows, {
        "b32": {n: med[(next(iter(inputs)), n)] for n in runners},
        "b1": {n: med[(list(inputs)[1], n)] for n in runners},
    }


def serving(work: Path, rel, state: Path, quick: bool) -> tuple[list[dict], dict]:
    """The release served by `fedge edge serve` (INT8 CPU variant, tokenizing on the device) driven by tritonclient
    in its own process: one short utterance at 1 client against the same tokenization + ONNX Runtime call
    in-process, and mixed-length texts at 1 / 8 / 64 clients."""
    from bench.inference import ort_runner
    from fedge.cli.cluster import EdgeServerProcess, fedge_cmd
    from fedge.core.tasks.intent import IntentTask
    from fedge.edge_runtime.serving.tokenizer import HFTokenizer

    tok = HFTokenizer(rel.bundle / "tokenizer.json", 128, 0)
    runner = ort_runner(rel.bundle / "model.int8.cpu.onnx")
    samples = []
    for _ in range(300 if not quick else 50):
        t0 = time.perf_counter()
        runner(tok.encode_batch([SHORT]))
        samples.append(time.perf_counter() - t0)
    inprocess_p50 = statistics.median(samples) * 1e3
    repo = work / "edge-repo"
    subprocess.run(
        fedge_cmd(
            "edge", "install", str(rel.bundle), "--repo", str(repo), "--trust", str(state / "keys" / "release.pub")
        ),
        check=True,
        capture_output=True,
    )
    mixed = IntentTask().reference_texts()[0] + [
        " ".join(IntentTask().reference_texts()[0][i : i + 6]) for i in range(40)
    ]
    (work / "short.json").write_text(json.dumps([SHORT]))
    (work / "mixed.json").write_text(json.dumps(mixed))
    server = EdgeServerProcess(repo, state / "keys" / "release.pub", work / "edge.log")
    rows = []
    try:
        seconds = 3 if quick else 10
        _load(server.url, work / "short.json", 1, 2)  # warm-up: connections, the server's first batches
        short = _load(server.url, work / "short.json", 1, seconds)
        for c in (1, 8, 64):
            r = _load(server.url, work / "mixed.json", c, seconds)
            rows.append(
                {
                    "clients": c,
                    "texts": "mixed lengths (shipped utterances, and runs of 6 joined)",
                    "requests/s": r["rps"],
                    "p50 ms": r["p50_ms"],
                    "p99 ms": r["p99_ms"],
                    "errors": r["errors"],
                }
            )
    finally:
        server.stop()
    return rows, {"inprocess_p50_ms": inprocess_p50, "served_p50_ms": short["p50_ms"]}


def _load(url: str, texts: Path, concurrency: int, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.text_load", url, "text", str(texts), str(concurrency), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"text load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    sec = Section("Text: federated LoRA fine-tuning of all-MiniLM-L6-v2, its INT8 release and the edge")
    seeds, rounds = ((0,), 3) if quick else ((0, 1, 2), ROUNDS)
    t = progress.add_task(
        "text: federated LoRA vs TextCNN vs centralized; export; INT8 speed; serving", total=2 * len(seeds) + 3
    )
    rows, first = accuracy(work, seeds, rounds, progress, t)
    rel = first["release"]
    speed_rows, med = int8_speed(rel, first["state"], quick)
    progress.advance(t)
    serve_rows, served = serving(work, rel, first["state"], quick)
    progress.advance(t)
    full_bytes = rel.sizes["model.fp32.onnx"]
    b32 = med["b32"]
    mean = {
        k: statistics.mean(r[k] for r in rows) for k in ("LoRA + head", "TextCNN (intent task)", "centralized LoRA")
    }
    g = rel.gate
    sec.figures.update(
        {
            "text_fed_lora_accuracy": mean["LoRA + head"],
            "text_fed_lora_minus_textcnn": mean["LoRA + head"] - mean["TextCNN (intent task)"],
            "text_fed_minus_central": mean["LoRA + head"] - mean["centralized LoRA"],
            "text_bytes_per_round_vs_model": max(r["bytes/client/round"] for r in rows) / full_bytes,
            "text_round_s_secagg": statistics.median(r["s/round (SecAgg+)"] for r in rows),
            "text_int8_vs_ort_fp32_fused_b32": b32["ONNX Runtime FP32 (fused)"]
            / b32["ONNX Runtime INT8 (CPU variant)"],
            "text_int8_vs_torch_fp32_b32": b32["PyTorch eager FP32"] / b32["ONNX Runtime INT8 (CPU variant)"],
            "text_int8_cpu_accuracy_drop": g["variants"]["int8_cpu"]["drop"],
            "text_int8_trt_accuracy_drop": g["variants"]["int8_trt"]["drop"],
            "text_int8_size_ratio": rel.int8_size_ratio,
            "text_serving_p50_c1_overhead_ms": served["served_p50_ms"] - served["inprocess_p50_ms"],
            "text_fed_lora_accuracy_min": min(r["LoRA + head"] for r in rows),
            "text_fed_lora_accuracy_max": max(r["LoRA + head"] for r in rows),
            "text_central_accuracy": mean["centralized LoRA"],
            "text_holdout_examples": g["examples"],
            "text_int8_vs_ort_fp32_exported_b32": b32["ONNX Runtime FP32 (as exported)"]
            / b32["ONNX Runtime INT8 (CPU variant)"],
            "text_serving_p50_c1_ms": served["served_p50_ms"],
            "text_inprocess_p50_c1_ms": served["inprocess_p50_ms"],
            "text_round_s_max": max(r["s/round (SecAgg+)"] for r in rows),
        }
    )
    sec.tables.append(
        (
            "Accuracy on the union of the customers' holdouts (3 customers, SecAgg+, "
            f"{rounds} rounds; TextCNN: the intent task on the same files; centralized: LoRA + head on"
            " the union of the training splits, as many epochs as the federated run's local epochs)",
            rows,
        )
    )
    sec.tables.append(
        (
            "INT8 release of the first split's run (federated MinMax calibration, federated gate on"
            " both INT8 variants through ONNX Runtime)",
            [
                {
                    "variant": k,
                    "accuracy": v["accuracy"],
                    "drop": v["drop"],
                    "top-1 agreement": v["top1_agreement"],
                    "file MB": rel.sizes[f"model.{k.replace('_', '.')}.onnx"] / 1e6,
                }
                for k, v in g["variants"].items()
            ]
            + [{"variant": "fp32 (fused)", "accuracy": g["fp32_accuracy"], "file MB": full_bytes / 1e6}],
        )
    )
    sec.tables.append(("ONNX Runtime and PyTorch, 1 thread, medians of interleaved repetitions", speed_rows))
    sec.tables.append(
        (
            f"Edge server (INT8 CPU variant, tokenizing on the device), tritonclient.grpc; one short"
            f" utterance at 1 client: p50 {served['served_p50_ms']:.2f} ms served against"
            f" {served['inprocess_p50_ms']:.2f} ms in-process (tokenize + ONNX Runtime)",
            serve_rows,
        )
    )
    sec.data = {"rows": rows, "speed": {f"{k}": v for k, v in med.items()}, "served": served, "gate": g}
    return sec
