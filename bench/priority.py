"""Request priority under load: the ResNet release served with a batch of at most 8 (so that requests queue),
64 tritonclient clients at once, 4 of them sending with ``priority=1``: the latency each group sees on a server
whose model has two priority levels (the others at the default, 2), against the same server without levels.
The two groups are separate load generator processes started together."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from .report import Section
from .serving import _Server

URGENT, ROUTINE = 4, 60
BATCHING = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 500}}
LEVELS = {
    **BATCHING,
    "dynamic_batching": {**BATCHING["dynamic_batching"], "priority_levels": 2, "default_priority_level": 2},
}


def _generators(n: int) -> list[subprocess.Popen]:
    from fedge.core.procs import fedge_env

    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.load_client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=fedge_env(),
        )
        for _ in range(n)
    ]


def priority(sec: Section, work: Path, progress, quick: bool) -> None:
    """Needs the ResNet release that :func:`bench.serving.measure` built in ``work``."""
    from . import resnet

    bundle, pub = work / "bundle", work / "keys" / "release.pub"
    servers = {
        "priority levels": _Server(work, bundle, pub, "priority", "--backend", "onnxruntime-cpu", config=LEVELS),
        "no priority levels": _Server(work, bundle, pub, "fifo", "--backend", "onnxruntime-cpu", config=BATCHING),
    }
    reps, seconds = (1, 2.0) if quick else (3, 4.0)
    t = progress.add_task(
        f"serving: priority levels ({URGENT} urgent among {URGENT + ROUTINE} clients)", total=1 + reps * len(servers)
    )
    gens = _generators(2)
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for s in servers.values():
            s.wait_ready()
        progress.advance(t)
        rng = np.random.default_rng(2)
        for _ in range(reps):
            for name in rng.permutation(list(servers)):
                cmd = {
                    "url": servers[str(name)].url,
                    "model": "resnet",
                    "input_name": "input",
                    "shape": [1, *resnet.INPUT],
                    "seconds": seconds,
                }
                groups = {
                    "routine": {**cmd, "concurrency": ROUTINE},
                    "urgent (priority 1)": {**cmd, "concurrency": URGENT, "priority": 1},
                }
                for g, c in zip(gens, groups.values()):
                    g.stdin.write(json.dumps(c) + "\n")
                    g.stdin.flush()
                for g, group in zip(gens, groups):
                    runs.setdefault((str(name), group), []).append(json.loads(g.stdout.readline()))
                progress.advance(t)
    finally:
        for g in gens:
            g.stdin.close()
            g.wait(30)
        for s in servers.values():
            s.stop()

    def med(key, *at):
        return statistics.median(r[key] for r in runs[at])

    rows = [
        {
            "server": f"fedge edge serve, {name}",
            "clients": f"{group}: {URGENT if 'urgent' in group else ROUTINE}",
            "requests/s": med("throughput", name, group),
            "p50 ms": med("p50_ms", name, group),
            "p99 ms": med("p99_ms", name, group),
            "errors": sum(r["errors"] for r in runs[(name, group)]),
        }
        for (name, group) in sorted(runs)
    ]
    sec.tables.append(
        (
            f"Request priority: ResNet-18-style INT8, max_batch_size 8, {URGENT + ROUTINE} clients at"
            f" once ({URGENT} sending priority=1), {seconds:g} s per measurement, median of {reps}"
            " repetition(s)",
            rows,
        )
    )
    sec.figures["priority_p50_routine_vs_urgent"] = med("p50_ms", "priority levels", "routine") / med(
        "p50_ms", "priority levels", "urgent (priority 1)"
    )
    sec.figures["priority_p50_urgent_vs_without_levels"] = med(
        "p50_ms", "no priority levels", "urgent (priority 1)"
    ) / med("p50_ms", "priority levels", "urgent (priority 1)")
    sec.notes.append(
        f"Request priority: model config {json.dumps(LEVELS)} against the same without the two priority keys. With"
        " levels, the batch workers take every waiting priority-1 request before the others, so the urgent clients'"
        " requests ride the next batch instead of waiting behind the queue; without levels a priority changes"
        " nothing (as in Triton) and both groups wait alike. priority_p50_routine_vs_urgent: how many times longer"
        " a routine request waits than an urgent one on the server with levels; priority_p50_urgent_vs_without_levels:"
        " how many times faster the urgent clients are answered than on the server without levels."
    )
