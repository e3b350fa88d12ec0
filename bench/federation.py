"""Rounds and learning on a real federation: a coordinator and 3 client daemons (Flower SuperLink and SuperNodes,
TLS + node authentication) on loopback, the customers holding Dirichlet(0.5) non-IID splits. Seconds per round
with SecAgg+ off and on (digits), federated vs centralized accuracy (digits and intent), and the INT8 accuracy
drop of a release exported from the digits run (fedge's federated calibration and gate, no pruning)."""

from __future__ import annotations

import contextlib
import io
import statistics
from pathlib import Path

from .plots import learning_curves
from .report import Section


def _federation(work: Path, task: str, files: list[Path]):
    from fedge.cli.cluster import LocalFederation
    from fedge.cli.demo import CUSTOMERS

    fed = LocalFederation(work / f"fed-{task}")
    fed.start_coordinator()
    for name, f in zip(CUSTOMERS, files):
        fed.start_client(name, f, task)
    return fed


def _launch(fed, task: str, rounds: int, secagg: bool, **extra) -> int:
    from fedge.server.run_config import RunConfig
    from fedge.server.runs import launch

    with contextlib.redirect_stdout(io.StringIO()):  # the live round table; the registry keeps every number
        outcome = launch(
            fed.state,
            RunConfig(task=task, num_rounds=rounds, min_clients=3, secagg=secagg, seed=0, round_timeout=180, **extra),
        )
    run_id = outcome.run_id
    if not outcome.ok:
        raise RuntimeError(f"{task} run {run_id} failed; logs in {fed.root / 'logs'} and {fed.state / 'logs'}")
    return run_id


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    from fedge.cli.demo import write_customer_data
    from fedge.core.baseline import centralized_accuracy
    from fedge.core.tasks import get_task
    from fedge.edge_runtime.distribution.bundle import generate_keys
    from fedge.export.pipeline import ExportConfig, export_release
    from fedge.server.runs import open_registry

    sec = Section("Federated rounds and learning (3 client daemons on loopback, TLS + node auth)")
    from fedge.cli.demo import DPSGD_DEMO

    plain_rounds, secagg_rounds, intent_rounds = (3, 2, 3) if quick else (8, 3, 10)
    dpsgd_rounds = 3 if quick else DPSGD_ROUNDS
    t = progress.add_task("federation: digits plain, SecAgg+, export, DP-SGD; intent; central DP sweep", total=6)
    curves, rows = {}, []

    files = write_customer_data(work / "digits", 0.5, 0, "digits")
    fed = _federation(work, "digits", files)
    try:
        plain = _launch(fed, "digits", plain_rounds, secagg=False)
        progress.advance(t)
        secagg = _launch(fed, "digits", secagg_rounds, secagg=True)
        progress.advance(t)
        reg = open_registry(fed.state)
        generate_keys(fed.state / "keys")
        release = export_release(
            fed.state, ExportConfig(run=plain, out=work / "release-digits", prune="none", max_accuracy_drop=0.05)
        )
        progress.advance(t)
        dpsgd = _launch(fed, "digits", dpsgd_rounds, secagg=False, dp_sgd_epsilon=8.0, **DPSGD_DEMO)
        progress.advance(t)
    finally:
        fed.stop_all()
    task = get_task("digits")
    central = centralized_accuracy(task, files, epochs=plain_rounds * task.defaults.local_epochs, seed=0)
    p_rounds, s_rounds = reg.rounds(plain), reg.rounds(secagg)
    round_plain = statistics.median(r.wall_s for r in p_rounds)
    round_secagg = statistics.median(r.wall_s for r in s_rounds)
    curves["digits, SecAgg+ off"] = [r.accuracy for r in p_rounds]
    curves["digits, SecAgg+ on"] = [r.accuracy for r in s_rounds]
    d_rounds = reg.rounds(dpsgd)
    curves["digits, DP-SGD ε<=8"] = [r.accuracy for r in d_rounds]
    gate = release.gate

    ifiles = write_customer_data(work / "intent", 0.5, 0, "intent")
    fed = _federation(work, "intent", ifiles)
    try:
        irun = _launch(fed, "intent", intent_rounds, secagg=False)
        ireg = open_registry(fed.state)
    finally:
        fed.stop_all()
    itask = get_task("intent")
    icentral = centralized_accuracy(itask, ifiles, epochs=intent_rounds * itask.defaults.local_epochs, seed=0)
    i_rounds = ireg.rounds(irun)
    curves["intent, SecAgg+ off"] = [r.accuracy for r in i_rounds]
    progress.advance(t)
    sweep = central_dp_sweep(
        work,
        rounds=3 if quick else 10,
        runs=((0.0, False), (1.0, False))
        if quick
        else ((0.0, False), (0.3, False), (1.0, False), (3.0, False), (1.0, True)),
    )
    progress.advance(t)

    sec.figures.update(
        {
            "round_s_plain": round_plain,
            "round_s_secagg": round_secagg,
            "secagg_overhead": round_secagg / round_plain,
            "fed_minus_central_digits": p_rounds[-1].accuracy - central,
            "fed_minus_central_intent": i_rounds[-1].accuracy - icentral,
            "dpsgd_eps8_minus_nonprivate_digits": d_rounds[-1].accuracy - p_rounds[-1].accuracy,
            "dpsgd_eps8_epsilon_spent": d_rounds[-1].privacy.get("epsilon"),
            "int8_accuracy_drop_digits": gate["accuracy_drop"],
        }
    )
    for label, rs in (
        ("digits, SecAgg+ off", p_rounds),
        ("digits, SecAgg+ on", s_rounds),
        ("digits, DP-SGD ε<=8 (SecAgg+ off)", d_rounds),
        ("intent, SecAgg+ off", i_rounds),
    ):
        w = [r.wall_s for r in rs]
        rows.append(
            {
                "run": label,
                "rounds": len(rs),
                "s/round min": min(w),
                "s/round median": statistics.median(w),
                "s/round max": max(w),
                "final accuracy": rs[-1].accuracy,
                "centralized": icentral if label.startswith("intent") else central,
            }
        )
    sec.tables.append(
        (
            "Seconds per round (from the registry: launch of the round's messages to the aggregated,"
            " checkpointed model) and accuracy on the union of the customers' holdouts",
            rows,
        )
    )
    sec.tables.append(
        (
            "INT8 release of the digits run (federated MinMax calibration, federated gate, no pruning)",
            [
                {
                    "FP32 accuracy": gate["fp32_accuracy"],
                    "INT8 accuracy": gate["int8_accuracy"],
                    "drop": gate["accuracy_drop"],
                    "top-1 agreement": gate["top1_agreement"],
                    "INT8 size / FP32": release.int8_size_ratio,
                }
            ],
        )
    )
    sec.tables.append(
        (
            "Central DP (client-side clipping C = 1, or adaptive from 0.1 toward the median update norm;"
            " Gaussian noise on the aggregate), 100 simulated customers (Flower simulation engine,"
            f" Dirichlet 0.5, {SWEEP_EPOCHS} local epochs, lr {SWEEP_LR}), digits",
            sweep,
        )
    )
    if docs is not None:
        sec.plots.append(learning_curves(docs / "bench-learning.png", curves, {"digits": central, "intent": icentral}))
    sec.notes += _notes(dpsgd_rounds)
    sec.data = {
        "curves": curves,
        "centralized": {"digits": central, "intent": icentral},
        "wall_s": {
            k: [r.wall_s for r in v] for k, v in (("plain", p_rounds), ("secagg", s_rounds), ("intent", i_rounds))
        },
    }
    return sec


def _notes(dpsgd_rounds: int) -> list[str]:
    from fedge.cli.demo import DPSGD_DEMO

    return [
        "Centralized = the same (non-private) model trained on the union of the customers' training splits for as"
        " many epochs as"
        " the federated run trained locally in total, evaluated on the union of their holdouts.",
        "Flower starts a `flwr-clientapp` process per message on every SuperNode; fedge forks it from a pre-imported"
        " zygote (fedge/core/warm_exec.py), which saves the 1.2-4 CPU-seconds of imports a cold start costs each time"
        " (FEDGE_WARM_APPS=0 turns it off). SecAgg+ adds its key-exchange, share and unmask stages, each another"
        " message and process per SuperNode.",
        "DP-SGD run: every customer runs Opacus DP-SGD with the noise it derives for ε <= 8 (δ = 1e-5) over the"
        f" {dpsgd_rounds} planned rounds (noisy training converges more slowly: the non-private run is flat from"
        " round 4, the DP-SGD run still gains until about round 14), with the demo's DP settings"
        f" (batch {DPSGD_DEMO['batch_size']}, lr {DPSGD_DEMO['lr']},"
        f" {DPSGD_DEMO['local_epochs']} local epochs, per-sample clip {DPSGD_DEMO['dp_sgd_clip']});"
        " compared with the non-private run above (its own defaults). Customers hold 430-720 images each.",
    ]


SWEEP_EPOCHS, SWEEP_LR = 10, 0.01  # ~14 images per customer: one batch per epoch, so epochs are the local steps
DPSGD_ROUNDS = 16  # the same ε over more rounds: more steps, each noisier; 8 -> 16 gained ~1.5 points in-process


def central_dp_sweep(work: Path, rounds: int, runs) -> list[dict]:
    """`fedge simulate` at several (noise multiplier, adaptive clipping) settings; each run is its own process
    (Ray starts and stops)."""
    import json
    import subprocess
    import sys

    from fedge.core.procs import fedge_env

    rows = []
    for sigma, adaptive in runs:
        args = [
            sys.executable,
            "-m",
            "fedge.cli",
            "simulate",
            "--clients",
            "100",
            "--rounds",
            str(rounds),
            "--json",
            "--local-epochs",
            str(SWEEP_EPOCHS),
            "--lr",
            str(SWEEP_LR),
            "--out",
            str(work / f"sim-sigma-{sigma}{'-adaptive' if adaptive else ''}"),
        ]
        if sigma > 0:
            args += ["--dp-noise", str(sigma), "--dp-clip", "0.1" if adaptive else "1.0"]
            args += ["--dp-adaptive"] if adaptive else []
        out = subprocess.run(args, capture_output=True, text=True, timeout=900, env=fedge_env())
        doc = json.loads(out.stdout[out.stdout.index("{") :]) if out.returncode == 0 else None
        last = doc["rounds"][-1] if doc else {}
        rows.append(
            {
                "noise multiplier σ": sigma,
                "clip": ("adaptive, last " + _fmt_clip(last)) if adaptive else ("1.0" if sigma > 0 else "-"),
                "rounds": rounds,
                "accuracy": last.get("accuracy"),
                "ε (δ = 1e-5)": last.get("epsilon") if sigma > 0 else None,
                "status": doc["status"] if doc else f"failed: {out.stderr[-200:]}",
            }
        )
    return rows


def _fmt_clip(last: dict) -> str:
    clip = ((last.get("privacy") or {}).get("central") or {}).get("clip")
    return f"{clip:.3f}" if clip is not None else "?"
