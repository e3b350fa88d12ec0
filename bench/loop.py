"""The loop (docs/LOOP.md): what on-device monitoring costs the serving path, how well the label-free estimate
and the drift alarm do, what one round of corrections buys, and what a health report costs a poll.

- Monitoring cost: the digits model (the cheapest there is, so the relative cost is at its largest) served with
  monitoring on (the default) and off (``--no-monitoring``), driven by tritonclient at 1 and 64 clients over gRPC
  and REST; ratios of throughput per repetition, paired.
- Estimate and drift: the intent model trained on 60% of the shipped utterances (seeded splits); its reference
  and temperature made from a 20% holdout by the export's own code (client.jobs.monitoring_statistics,
  export.reference); devices' windows (monitoring.window) over the other 20% as traffic, unshifted and in new
  slang (cli.loop_data.shifted).
- One feedback round: the loop demo end to end (cli.demo_loop).
- Report size: a health summary as a poll carries it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from .report import Section
from .serving import _drive, _Server, _start_drivers, _stop_drivers

CLIENTS = (1, 64)


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    sec = Section("The loop: monitoring on the device, the label-free estimate, drift, one round of corrections")
    work.mkdir(parents=True, exist_ok=True)
    monitoring_cost(sec, work / "cost", progress, quick)
    estimate_and_drift(sec, progress, quick)
    report_bytes(sec)
    feedback_round(sec, work / "round", progress, docs or work)
    return sec


def monitoring_cost(sec: Section, work: Path, progress, quick: bool) -> None:
    from fedge.edge_runtime.distribution.bundle import generate_keys
    from fedge.export.sample_bundle import untrained_bundle

    work.mkdir(parents=True, exist_ok=True)
    priv, pub = generate_keys(work / "keys")
    reference = {"temperature": 1.0, "class_counts": [10] * 10, "confidence_counts": [0, 50, 50] + [0] * 7}
    bundle = untrained_bundle(work / "bundle", priv, "digits", monitoring=reference)
    flags = ("--backend", "onnxruntime-cpu")
    servers = {  # a second server with monitoring off: the same pairing against it measures the noise
        "on": _Server(work, bundle, pub, "on", *flags, model="digits"),
        "off": _Server(work, bundle, pub, "off", *flags, "--no-monitoring", model="digits"),
        "off, control": _Server(work, bundle, pub, "control", *flags, "--no-monitoring", model="digits"),
    }
    reps, seconds = (1, 2.0) if quick else (7, 4.0)
    t = progress.add_task("loop: serving with monitoring on and off", total=reps * 3 * 2 * len(CLIENTS))
    drivers = _start_drivers()
    runs: dict[tuple[str, str, int], list[dict]] = {}
    try:
        for s in servers.values():
            s.wait_ready()
        rng = np.random.default_rng(0)
        for _ in range(reps):
            for proto in ("grpc", "http"):
                for c in CLIENTS:
                    for name in rng.permutation(list(servers)):
                        s = servers[str(name)]
                        cmd = {
                            "url": s.http_url if proto == "http" else s.url,
                            "model": "digits",
                            "input_name": "input",
                            "shape": [1, 1, 8, 8],
                            "seconds": seconds,
                            "http": proto == "http",
                        }
                        runs.setdefault((str(name), proto, c), []).append(_drive(drivers, cmd, c))
                        progress.advance(t)
    finally:
        _stop_drivers(drivers)
        for s in servers.values():
            s.stop()
    rows = []
    for proto in ("grpc", "http"):
        for c in CLIENTS:
            on, off = runs[("on", proto, c)], runs[("off", proto, c)]
            ratio = statistics.median(a["throughput"] / b["throughput"] for a, b in zip(on, off))
            control = statistics.median(
                a["throughput"] / b["throughput"] for a, b in zip(runs[("off, control", proto, c)], off)
            )
            sec.figures[f"loop_monitoring_throughput_ratio_c{c}_{proto}"] = ratio
            sec.figures[f"loop_control_off_vs_off_c{c}_{proto}"] = control
            rows.append(
                {
                    "protocol": proto,
                    "clients": c,
                    "requests/s, monitoring on": statistics.median(r["throughput"] for r in on),
                    "requests/s, off": statistics.median(r["throughput"] for r in off),
                    "on / off (median of paired reps)": ratio,
                    "control: off / off": control,
                    "p99 ms on": statistics.median(r["p99_ms"] for r in on),
                    "p99 ms off": statistics.median(r["p99_ms"] for r in off),
                    "errors": sum(r["errors"] for r in on + off),
                }
            )
    sec.tables.append(
        (
            f"Serving the digits model with monitoring on and off (tritonclient, {reps} repetitions of"
            f" {seconds:.0f} s, the servers interleaved in a random order each time; the control row pairs a second"
            " server with monitoring off against the first: the noise of this 2-core VM):",
            rows,
        )
    )
    sec.data["monitoring_cost"] = {f"{k[0]}/{k[1]}/c{k[2]}": v for k, v in runs.items()}


def _trained(seed: int):
    """The intent model trained on a seeded 60% of the shipped utterances -> (model, task, holdout rows,
    traffic rows) with rows as (texts, labels)."""
    import torch

    from fedge.core.tasks.intent import IntentTask
    from fedge.core.tasks.training import TrainConfig, train

    task = IntentTask()
    texts, labels = task.reference_texts()
    order = np.random.default_rng(seed).permutation(len(texts))
    n = len(texts)
    parts = [order[: int(0.6 * n)], order[int(0.6 * n) : int(0.8 * n)], order[int(0.8 * n) :]]
    rows = [([texts[i] for i in p], [labels[i] for i in p]) for p in parts]
    torch.manual_seed(seed)
    model = task.build_model()
    train(model, task.encode([(0, t, lab) for t, lab in zip(*rows[0])], "train"), TrainConfig(epochs=12, lr=3e-3))
    return model, task, rows[1], rows[2]


def _logits(model, task, texts: list[str]) -> np.ndarray:
    from fedge.core.tasks.training import predict

    return predict(model, task.tokenizer.encode_batch(texts))


def estimate_and_drift(sec: Section, progress, quick: bool) -> None:
    from fedge.cli.loop_data import shifted
    from fedge.client.jobs import monitoring_statistics
    from fedge.edge_runtime.monitoring.measures import drift_score, drifted
    from fedge.edge_runtime.monitoring.window import VersionHealth
    from fedge.export.reference import monitoring_reference

    seeds = range(3 if quick else 10)
    t = progress.add_task("loop: estimate and drift (intent, seeded splits)", total=len(seeds))
    rows, alarms, windows, to_flag = [], 0, 0, []
    rng = np.random.default_rng(0)
    for seed in seeds:
        model, task, (h_texts, h_labels), (t_texts, t_labels) = _trained(seed)
        y_hold = np.array([task.labels.index(x) for x in h_labels])
        y_traffic = np.array([task.labels.index(x) for x in t_labels])
        stats = monitoring_statistics(_logits(model, task, h_texts), y_hold) | {"kind": "fp32"}
        ref = monitoring_reference({"holdout": {"monitoring": stats}})
        row = {"seed": seed, "temperature": ref["temperature"], "holdout rows": ref["examples"]}
        for name, texts in (("unshifted", t_texts), ("new slang", [shifted(x) for x in t_texts])):
            logits = _logits(model, task, texts)
            h = VersionHealth("intent", 1, len(task.labels), ref["temperature"], size=len(texts))
            h.observe(logits, 0.0)
            s = h.summary()
            measured = float((logits.argmax(1) == y_traffic).mean())
            row[f"{name}: measured"] = measured
            row[f"{name}: estimated"] = s.confidence_sum / s.window
            row[f"{name}: drift"] = drift_score(ref, s.class_counts, s.confidence_counts)["drift"]
            if name == "unshifted":  # the holdout and the traffic re-split at random: same distribution
                pooled = np.concatenate([_logits(model, task, h_texts), logits])
                y_pooled = np.concatenate([y_hold, y_traffic])
                for _ in range(30):
                    order = rng.permutation(len(pooled))
                    half_ref, half_win = order[: len(y_hold)], order[len(y_hold) :]
                    r_stats = monitoring_statistics(pooled[half_ref], y_pooled[half_ref]) | {"kind": "fp32"}
                    r_ref = monitoring_reference({"holdout": {"monitoring": r_stats}})
                    w = VersionHealth("intent", 1, len(task.labels), r_ref["temperature"], size=len(half_win))
                    w.observe(pooled[half_win], 0.0)
                    ws = w.summary()
                    alarms += drifted(drift_score(r_ref, ws.class_counts, ws.confidence_counts))
                    windows += 1
            else:  # the shifted stream, request by request: how many until the alarm (checked every 10)
                order = rng.permutation(len(texts))
                w = VersionHealth("intent", 1, len(task.labels), ref["temperature"], size=1000)
                for k in range(0, len(order), 10):
                    w.observe(logits[order[k : k + 10]], 0.0)
                    ws = w.summary()
                    if ws.window >= 50 and drifted(drift_score(ref, ws.class_counts, ws.confidence_counts)):
                        to_flag.append(ws.window)
                        break
                else:
                    to_flag.append(None)
        rows.append(row)
        progress.advance(t)
    err = [abs(r["unshifted: estimated"] - r["unshifted: measured"]) for r in rows]
    err_shift = [abs(r["new slang: estimated"] - r["new slang: measured"]) for r in rows]
    sec.figures["loop_estimate_abs_error_unshifted"] = statistics.mean(err)
    sec.figures["loop_estimate_abs_error_shifted"] = statistics.mean(err_shift)
    sec.figures["loop_drift_false_alarm_rate"] = alarms / windows
    flagged = [n for n in to_flag if n is not None]
    sec.figures["loop_drift_requests_to_flag_shift"] = statistics.median(flagged) if flagged else None
    sec.tables.append(
        (
            "The label-free estimate and the drift score per seeded split (intent model; holdout and traffic of"
            " 108 utterances each, so one utterance is 0.009 of accuracy):",
            rows,
        )
    )
    signed = statistics.mean(r["new slang: estimated"] - r["new slang: measured"] for r in rows)
    sec.notes.append(
        f"Estimate error on unshifted traffic: mean {statistics.mean(err):.3f}, max {max(err):.3f} over"
        f" {len(rows)} splits; on the new slang: mean {statistics.mean(err_shift):.3f} (signed, estimate minus"
        f" measured: {signed:+.3f}). Confidence-based estimation assumes the model's confidence still means what"
        " it meant on the holdout; a shift of words can break that either way, so the shifted figure is"
        " reported, not promised. What an alarm needs holds: the estimate falls with the accuracy."
    )
    sec.notes.append(
        f"Drift alarm on unshifted traffic: the holdout and traffic of each split re-split at random 30 times"
        f" (the reference, its temperature and a window of the other half remade each time: two samples of one"
        f" distribution): {alarms} of {windows} flagged ({100 * alarms / windows:.1f}%). The shifted stream was"
        f" flagged after {to_flag} predictions (per split; checked every 10 from the 50 a summary needs)."
    )
    sec.data["estimate"] = rows


def report_bytes(sec: Section) -> None:
    from fedge.edge_runtime.monitoring.window import VersionHealth

    rows = []
    for labels, text in ((12, True), (10, False), (100, True)):
        h = VersionHealth("m", 3, labels, size=1000)
        rng = np.random.default_rng(0)
        for _ in range(1000):
            tokens = (np.array([rng.integers(3, 60)]), np.array([0]), np.array([False])) if text else None
            h.observe(rng.normal(0, 2, (1, labels)), 0.003, tokens=tokens)
        s = h.summary("0" * 64)
        rows.append({"labels": labels, "text model": text, "summary bytes": len(s.SerializeToString())})
    sec.figures["loop_health_report_bytes_12_labels"] = float(rows[0]["summary bytes"])
    sec.tables.append(("What one served version's health summary adds to a poll (protobuf bytes):", rows))


def feedback_round(sec: Section, work: Path, progress, docs: Path) -> None:
    from rich.console import Console

    from fedge.cli.demo_loop import LoopConfig, plot_loop, run_loop

    t = progress.add_task("loop: one round of corrections end to end (the loop demo)", total=1)
    result = run_loop(LoopConfig(out=work), Console(file=open(work.parent / "loop-demo.log", "w"), width=120))
    progress.advance(t)
    usual1, slang1, slang2, usual2 = result.phases
    f = result.gate["forgetting"]
    sec.figures["loop_round_slang_accuracy_before"] = slang1.measured
    sec.figures["loop_round_slang_accuracy_after"] = slang2.measured
    sec.figures["loop_round_original_holdout_before"] = f["original"]["previous"]
    sec.figures["loop_round_original_holdout_after"] = f["original"]["candidate"]
    sec.figures["loop_round_forgetting"] = f["forgetting"]
    sec.tables.append(
        (
            "One round of corrections (fedge demo --task loop: 3 companies, 3 devices, 2 companies' agents"
            " correct 108 answers each; traffic of 108 held-out utterances asked twice per device):",
            [
                {
                    "release": p.release,
                    "traffic": p.name,
                    "measured": p.measured,
                    "estimated": p.estimated,
                    "drift": p.drift,
                    "production (corrections)": p.production,
                }
                for p in result.phases
            ],
        )
    )
    docs.mkdir(parents=True, exist_ok=True)
    sec.plots.append(plot_loop(result, docs / "loop-round.png").name)
    sec.notes.append(
        f"Release 2's gate: on the customers' original holdouts {f['original']['previous']:.3f} (release 1) ->"
        f" {f['original']['candidate']:.3f}; on the corrections' holdouts {f['added']['previous']:.3f} ->"
        f" {f['added']['candidate']:.3f}. Served accuracy on the new slang {slang1.measured:.3f} ->"
        f" {slang2.measured:.3f}, on the usual words {usual1.measured:.3f} -> {usual2.measured:.3f}."
    )
    sec.data["feedback_round"] = [p.__dict__ for p in result.phases] + [{"gate_forgetting": f}]
