"""Edge serving: ``fedge edge serve`` (a real process) driven over gRPC by ``tritonclient.grpc`` from another
process with 1, 8 and 64 concurrent clients sending batch-1 requests, with dynamic batching on (the defaults)
and off, on the ResNet-18-style INT8 release; against the same model file called in-process by ONNX Runtime
at its best batch. Both servers and the in-process session use 1 intra-op thread."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .plots import serving_curves
from .report import Section
from .timing import interleaved

CONCURRENCY = (1, 8, 64)
STREAMING = "batching, a stream per client"  # the batching server driven with tritonclient's async_stream_infer
SHARED = "batching, input and output in shared memory"  # ... and with Triton's system shared memory extension
HTTP = "batching, over HTTP (tritonclient.http.aio)"  # ... and over the KServe v2 REST endpoint instead of gRPC
CACHED = "batching, response cache (every request a hit)"  # a 4th server, --cache-config, always the same input
LEAN = "batching, fedge edge perf (request built once, blocking calls)"  # perf_analyzer's way, 1 client only


def _bundle(work: Path, art, key) -> Path:
    from fedge.edge_runtime.distribution.bundle import Manifest, TensorDesc, write_bundle

    b = work / "bundle"
    shutil.rmtree(b, ignore_errors=True)
    b.mkdir(parents=True)
    for _kind, src in (("fp32", art.fp32), ("int8_cpu", art.int8_cpu), ("int8_trt", art.int8_trt)):
        shutil.copyfile(src, b / src.name)
    write_bundle(
        b,
        Manifest(
            model="resnet",
            task="bench-resnet18-style",
            inputs=(TensorDesc("input", "FP32", (-1, 3, 64, 64)),),
            outputs=(TensorDesc("logits", "FP32", (-1, 100)),),
            models={"fp32": art.fp32.name, "int8_cpu": art.int8_cpu.name, "int8_trt": art.int8_trt.name},
            max_batch_size=64,
        ),
        key,
    )
    return b


class _Server:
    def __init__(
        self,
        work: Path,
        bundle: Path,
        pub: Path,
        name: str,
        *flags: str,
        model: str = "resnet",
        tls_ca: Path | None = None,
        python: str | None = None,
        config: dict | None = None,
    ) -> None:
        """``tls_ca``: the server serves TLS (its flags say with what certificate); this CA verifies it.
        ``python``: the interpreter that serves (another install's), by default this one. ``config``: the
        model's config.json (Triton's model configuration terms)."""
        from fedge.cli.cluster import EdgeServerProcess
        from fedge.edge_runtime.distribution.bundle import load_public_key
        from fedge.edge_runtime.distribution.repository import install_bundle

        repo = work / f"repo-{name}"
        shutil.rmtree(repo, ignore_errors=True)
        install_bundle(repo, bundle, load_public_key(pub))
        if config is not None:
            (repo / model / "config.json").write_text(json.dumps(config))
        self.server = EdgeServerProcess(repo, pub, work / f"server-{name}.log", *flags, python=python)
        self.url, self.metrics_port, self.proc = self.server.url, self.server.metrics_port, self.server.proc
        self.http_url = self.server.http_url
        self.model, self.tls_ca = model, tls_ca

    def wait_ready(self) -> None:
        import time

        import grpc

        from fedge.edge_runtime.common.tls import channel_credentials
        from fedge.proto import grpc_service_pb2 as pb
        from fedge.proto import grpc_service_pb2_grpc as pb_grpc

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with (
                    grpc.secure_channel(self.url, channel_credentials(self.tls_ca))
                    if self.tls_ca
                    else grpc.insecure_channel(self.url)
                ) as ch:
                    if (
                        pb_grpc.GRPCInferenceServiceStub(ch)
                        .ModelReady(pb.ModelReadyRequest(name=self.model), timeout=2)
                        .ready
                    ):
                        return
            except grpc.RpcError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"edge server {self.url} did not become ready")

    def batch_stats(self) -> tuple[float, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        get = lambda n: (
            float(m.group(1))
            if (m := re.search(rf'^fedge_edge_batch_size_{n}{{model="{self.model}"}} (\S+)$', text, re.M))
            else 0.0
        )
        return get("sum"), get("count")

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server process has used so far (Linux), None elsewhere."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.server.stop()


def _start_drivers() -> list[subprocess.Popen]:
    """Load generator processes: on a machine with cores to spare the clients are spread over several, so that one
    Python process (tritonclient's callbacks hold its GIL) is not what limits the figure."""
    from fedge.core.procs import fedge_env

    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.load_client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=fedge_env(),
        )
        for _ in range(max(1, min(8, (os.cpu_count() or 1) // 2 - 1)))
    ]


def _stop_drivers(drivers: list[subprocess.Popen]) -> None:
    for d in drivers:
        d.stdin.close()
        d.wait(30)


def _drive(drivers: list[subprocess.Popen], cmd: dict, concurrency: int) -> dict:
    """Split ``concurrency`` clients over the generator processes, run them at once, merge their results."""
    share = [len(range(i, concurrency, len(drivers))) for i in range(min(concurrency, len(drivers)))]
    for d, c in zip(drivers, share):
        d.stdin.write(json.dumps({**cmd, "concurrency": c, "samples": True}) + "\n")
        d.stdin.flush()
    parts = [json.loads(d.stdout.readline()) for d in drivers[: len(share)]]
    ms = np.concatenate([p.pop("lat_ms") for p in parts]) if any(p["requests"] for p in parts) else np.array([np.nan])
    return {
        "requests": sum(p["requests"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), None),
        "generators": len(parts),
        "seconds": max(p["seconds"] for p in parts),
        "throughput": sum(p["throughput"] for p in parts),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    sec = Section("Edge serving over gRPC and HTTP (tritonclient, ResNet-18-style INT8)")
    inproc_b64_vs_b1 = measure(
        sec,
        work,
        progress,
        quick,
        backend="onnxruntime-cpu",
        plot=docs / "bench-serving.png" if docs is not None else None,
    )
    sec.notes += [
        "Without batching, concurrent requests run as separate ONNX Runtime calls on the server's inference threads"
        " (8 by default, both cores); with batching, batch workers run the coalesced batches (1 intra-op thread"
        " each): two by default on the CPU backend (Triton's default instance count for a CPU model), one with"
        " `--instances 1`. The in-process rows run one call at a time on 1 thread, so two batch workers can"
        " serve more images/s than the in-process reference (serving_c64_vs_inprocess above 1).",
        f"Batching can only win what batching saves in the backend: in-process, this INT8 ResNet runs"
        f" {inproc_b64_vs_b1:.2f}x faster per image at batch 64 than at batch 1 on this CPU, so a"
        " batching gain of 3x at 64 clients is out of reach here by construction; on a GPU the per-call cost that"
        " batching amortizes is far larger: see the ONNX Runtime CUDA rows in docs/gpu/BENCHMARKS.md.",
    ]
    front_end(sec, work / "front-end", progress, quick)
    from .priority import priority

    priority(sec, work, progress, quick)
    return sec


def _in_process(bundle: Path, pub: Path, backend: str, progress, quick: bool) -> tuple[dict, list, str]:
    """The file this backend serves, timed in this process with the same session options at each batch size
    (-> seconds per call by batch), and at batch 1 after 1 ms idle (-> seconds), and the file's name."""
    from fedge.edge_runtime.distribution.bundle import load_public_key, verify_bundle
    from fedge.edge_runtime.serving.backends import load_backend

    from . import resnet

    # in-process: the file this backend serves, the same session options, each batch size; best throughput wins
    be = load_backend(bundle, verify_bundle(bundle, load_public_key(pub)), backend, threads=1)
    xs = {b: np.random.default_rng(b).standard_normal((b, *resnet.INPUT)).astype(np.float32) for b in (1, 8, 64)}
    t = progress.add_task(f"serving ({backend}): in-process ONNX Runtime b1/b8/b64", total=3 if quick else 9)
    inproc = interleaved(
        {b: (lambda x=x: be.run({"input": x})) for b, x in xs.items()},
        reps=3 if quick else 9,
        target_s=0.3,
        on_rep=lambda: progress.advance(t),
    )
    # the same batch-1 call after 1 ms idle, as each request of a lone client finds the server (the client's
    # round trip leaves the core idle that long): no longer a hot loop's warm caches and busy core
    idle = []
    for _ in range(60 if quick else 300):
        time.sleep(0.001)
        t0 = time.perf_counter()
        be.run({"input": xs[1]})
        idle.append(time.perf_counter() - t0)
    return inproc, idle, be.model_file


class Measured(NamedTuple):
    runs: dict  # (setup, clients) -> each repetition's load-client result
    inproc: dict  # batch -> in-process seconds per call
    idle: list  # in-process batch-1 seconds after 1 ms idle
    be_file: str  # the model file the backend runs
    live_p50_ms: float  # a bare gRPC round trip


def _report(
    sec: Section,
    backend: str,
    suffix: str,
    plot: Path | None,
    m: Measured,
    setups: dict,
    other: str,
    reps: int,
    seconds: float,
) -> None:
    """The serving table, figures, notes, plot and raw data of one backend's measurement."""
    from fedge.edge_runtime.serving.backends import default_instances

    runs, inproc, idle, be_file, live_p50_ms = m
    inproc_tput = {b: b / statistics.median(v) for b, v in inproc.items()}
    best_batch = max(inproc_tput, key=inproc_tput.get)
    inproc_p50_b1_ms = statistics.median(inproc[1]) * 1e3
    count = 1 if default_instances(backend) > 1 else 2

    def med(name, c, key):
        return statistics.median(r[key] for r in runs[(name, c)])

    rows = [
        {
            "setup": f"in-process ORT b{b} ({be_file})",
            "clients": "-",
            "requests/s (images/s)": inproc_tput[b],
            "p50 ms": statistics.median(inproc[b]) * 1e3,
            "p99 ms": None,
            "mean batch": b,
            "errors": 0,
        }
        for b in (1, 8, 64)
    ]
    rows.insert(
        1,
        {
            "setup": f"in-process ORT b1, each call after 1 ms idle ({be_file})",
            "clients": "-",
            "requests/s (images/s)": 1 / statistics.median(idle),
            "p50 ms": statistics.median(idle) * 1e3,
            "p99 ms": None,
            "mean batch": 1,
            "errors": 0,
        },
    )
    for (name, c), rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rows.append(
            {
                "setup": f"fedge edge serve --backend {backend}, {name}",
                "clients": c,
                "requests/s (images/s)": med(name, c, "throughput"),
                "p50 ms": med(name, c, "p50_ms"),
                "p99 ms": med(name, c, "p99_ms"),
                "mean batch": med(name, c, "mean_batch"),
                "errors": sum(r["errors"] for r in rs),
            }
        )
    sec.tables.append(
        (
            f"{backend}: closed loop, {seconds:g} s per measurement, median of {reps} repetition(s)"
            " interleaved across the setups (4 servers, one also driven over streams and through shared memory);"
            " in-process rows are medians over many calls",
            rows,
        )
    )
    sec.figures["serving_c64_vs_inprocess" + suffix] = med("batching", 64, "throughput") / inproc_tput[best_batch]
    sec.figures["batching_gain_c64" + suffix] = med("batching", 64, "throughput") / med("no batching", 64, "throughput")
    sec.figures[f"batching_gain_c64_{count}_instance{'s' if count > 1 else ''}" + suffix] = med(
        other, 64, "throughput"
    ) / med("no batching", 64, "throughput")
    sec.figures["serving_p50_c1_overhead_ms" + suffix] = med("batching", 1, "p50_ms") - inproc_p50_b1_ms
    sec.figures["serving_p50_c1_overhead_ms_stream" + suffix] = med(STREAMING, 1, "p50_ms") - inproc_p50_b1_ms
    sec.figures["serving_p50_c1_overhead_ms_shm" + suffix] = med(SHARED, 1, "p50_ms") - inproc_p50_b1_ms
    sec.figures["serving_p50_c1_overhead_ms_http" + suffix] = med(HTTP, 1, "p50_ms") - inproc_p50_b1_ms
    sec.figures["serving_p50_c1_overhead_ms_perf" + suffix] = med(LEAN, 1, "p50_ms") - inproc_p50_b1_ms
    sec.figures["serving_p50_c1_server_us_perf" + suffix] = med(LEAN, 1, "server_us")
    sec.figures["serving_c64_vs_inprocess_http" + suffix] = med(HTTP, 64, "throughput") / inproc_tput[best_batch]
    sec.figures["serving_p50_c1_cache_hit_ms" + suffix] = med(CACHED, 1, "p50_ms")
    sec.figures["grpc_live_rtt_p50_ms" + suffix] = live_p50_ms
    sec.figures["inprocess_b1_p50_ms" + suffix] = inproc_p50_b1_ms
    sec.figures["inprocess_b1_after_idle_p50_ms" + suffix] = statistics.median(idle) * 1e3
    sec.figures["serving_errors" + suffix] = float(sum(r["errors"] for rs in runs.values() for r in rs))
    sec.notes += [
        f"{backend}: the servers run {be_file}; in-process best batch: {best_batch} ({inproc_tput[best_batch]:.0f}"
        f" images/s); in-process b1 p50 {inproc_p50_b1_ms:.3f} ms. The load generator shares the machine's"
        " cores with the servers.",
        f"A bare round trip (tritonclient `is_server_live`, no model) takes {live_p50_ms:.3f} ms p50 here: that much"
        " of the batch-1 overhead is Python gRPC on both ends before any inference work.",
        f"{CACHED}: `--cache-config local,size=67108864`; the load clients send one and the same image over and"
        " over, so after the first request every answer comes from the response cache and the model never runs"
        " (mean batch 0): the floor a repeated input (an unchanged camera frame, a frequent utterance) costs.",
    ]
    if plot is not None:
        served = {
            name: {c: (med(name, c, "throughput"), med(name, c, "p50_ms")) for c in CONCURRENCY}
            for name in setups
            if name != CACHED
        }  # (LEAN has 1 client only: not drawn)
        sec.plots.append(
            serving_curves(
                plot,
                f"fedge edge serve --backend {backend}, ResNet-18-style INT8",
                served,
                {f"in-process b{best_batch}": inproc_tput[best_batch], "in-process b1": inproc_tput[1]},
            )
        )
    sec.data[backend] = {
        "inprocess": {str(b): v for b, v in inproc.items()},
        "serving": {f"{n}|c{c}": rs for (n, c), rs in runs.items()},
    }


def measure(
    sec: Section, work: Path, progress, quick: bool, backend: str, suffix: str = "", plot: Path | None = None
) -> float:
    """Serve the ResNet release with ``--backend BACKEND`` (batching with the backend's default instance count,
    no batching, batching with another instance count: 1 where the default is 2, 2 where it is 1), drive it
    with 1/8/64 tritonclient clients, time the backend's own model file in-process; fills ``sec`` (figure names
    get ``suffix``; ``plot``: where to draw throughput and latency against clients) and returns the in-process
    batch-64 over batch-1 throughput ratio."""
    from fedge.edge_runtime.distribution.bundle import generate_keys, load_private_key
    from fedge.edge_runtime.serving.backends import default_instances

    from . import resnet

    work.mkdir(parents=True, exist_ok=True)
    t = progress.add_task(f"serving ({backend}): building the release and starting 4 edge servers", total=1)
    art = resnet.build(work / "model")
    priv, pub = generate_keys(work / "keys")
    bundle = _bundle(work, art, load_private_key(priv))
    flags = ("--backend", backend)
    count = 1 if default_instances(backend) > 1 else 2
    other = f"batching, {count} instance{'s' if count > 1 else ''}"
    servers = {
        "batching": _Server(work, bundle, pub, "batching", "--allow-client-shm", *flags),
        "no batching": _Server(work, bundle, pub, "nobatch", "--no-batching", *flags),
        other: _Server(work, bundle, pub, "batching-other", "--instances", str(count), *flags),
        CACHED: _Server(work, bundle, pub, "cached", "--cache-config", "local,size=67108864", *flags),
    }
    drivers = _start_drivers()
    driver = drivers[0]
    try:
        for s in servers.values():
            s.wait_ready()
        progress.advance(t)

        inproc, idle, be_file = _in_process(bundle, pub, backend, progress, quick)

        driver.stdin.write(json.dumps({"mode": "live", "url": servers["batching"].url}) + "\n")
        driver.stdin.flush()
        live_p50_ms = json.loads(driver.stdout.readline())["p50_ms"]

        reps, seconds = (1, 2.0) if quick else (3, 4.0)
        runs: dict[tuple[str, int], list[dict]] = {}
        setups = {name: (name, {}) for name in servers} | {
            STREAMING: ("batching", {"stream": True}),
            SHARED: ("batching", {"shm": True, "output_name": "logits"}),
            HTTP: ("batching", {"http": True}),
        }
        t = progress.add_task(
            f"serving ({backend}): 1/8/64 concurrent tritonclient clients",
            total=reps * (len(setups) * len(CONCURRENCY) + 1),
        )
        rng = np.random.default_rng(0)
        for _ in range(reps):
            for name in rng.permutation(list(setups)):
                server, mode = setups[str(name)]
                s = servers[server]
                for c in CONCURRENCY:
                    before = s.batch_stats()
                    r = _drive(
                        drivers,
                        {
                            "url": s.http_url if mode.get("http") else s.url,
                            "model": "resnet",
                            "input_name": "input",
                            "shape": [1, *resnet.INPUT],
                            "seconds": seconds,
                            **mode,
                        },
                        c,
                    )
                    after = s.batch_stats()
                    r["mean_batch"] = (
                        (after[0] - before[0]) / max(after[1] - before[1], 1) if name.startswith("batching") else 1.0
                    )
                    runs.setdefault((str(name), c), []).append(r)
                    progress.advance(t)
            runs.setdefault((LEAN, 1), []).append(_perf(servers["batching"].url, seconds))
            progress.advance(t)
    finally:
        _stop_drivers(drivers)
        for s in servers.values():
            s.stop()

    _report(
        sec, backend, suffix, plot, Measured(runs, inproc, idle, be_file, live_p50_ms), setups, other, reps, seconds
    )
    return statistics.median(inproc[1]) / statistics.median(inproc[64]) * 64


def _perf(url: str, seconds: float) -> dict:
    """One client of ``fedge edge perf`` (fedge's perf_analyzer: the request built once, then sent over a plain
    gRPC stub with blocking calls) against the server at ``url``: its requests/s and latency percentiles, and the
    server's own queue + compute time per request from the statistics extension."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedge.cli",
            "edge",
            "perf",
            "--url",
            url,
            "--model",
            "resnet",
            "--concurrency",
            "1",
            "--seconds",
            str(seconds),
            "--warmup",
            "0.5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"fedge edge perf failed: {out.stderr[-2000:]}")
    level = json.loads(out.stdout)["levels"][0]
    return {
        "throughput": level["requests_per_s"],
        "p50_ms": level["p50_ms"],
        "p99_ms": level["p99_ms"],
        "errors": level["failures"],
        "mean_batch": 1.0,
        "server_us": (level["server_queue_us"] or 0) + (level["server_compute_us"] or 0),
    }


def _certificates(out: Path) -> tuple[Path, Path, Path]:
    """(server certificate, its key, CA) for the TLS setup, as `fedge certs init` makes them."""
    from fedge.server.certs import init_certs

    paths = init_certs(out)
    return paths.server_cert, paths.server_key, paths.ca


def front_end(sec: Section, work: Path, progress, quick: bool) -> None:
    """What the server itself costs per request: the digits model (about 0.01 ms per call) served to 64
    tritonclient clients, with and without batching. Its requests/s is the most any model can be served at by one
    server process, which is what caps a GPU (see docs/gpu/BENCHMARKS.md); also the server's CPU per request."""
    from fedge.edge_runtime.distribution.bundle import generate_keys
    from fedge.export.sample_bundle import untrained_bundle

    work.mkdir(parents=True, exist_ok=True)
    t = progress.add_task("serving: front end (digits model, 64 clients)", total=1)
    priv, pub = generate_keys(work / "keys")
    bundle = untrained_bundle(work / "bundle", priv, "digits")
    certs = _certificates(work / "certs")
    servers = {
        "batching": _Server(work, bundle, pub, "batching", "--backend", "onnxruntime-cpu", model="digits"),
        "no batching": _Server(
            work, bundle, pub, "nobatch", "--no-batching", "--backend", "onnxruntime-cpu", model="digits"
        ),
        "batching, TLS": _Server(
            work,
            bundle,
            pub,
            "tls",
            "--backend",
            "onnxruntime-cpu",
            "--tls-cert",
            str(certs[0]),
            "--tls-key",
            str(certs[1]),
            model="digits",
            tls_ca=certs[2],
        ),
        "batching, tracing every request": _Server(
            work,
            bundle,
            pub,
            "trace",
            "--backend",
            "onnxruntime-cpu",
            "--trace-config",
            f"triton,file={work / 'trace.json'}",
            "--trace-config",
            "level=TIMESTAMPS",
            "--trace-config",
            "rate=1",
            "--trace-config",
            "triton,log-frequency=10000",
            model="digits",
        ),
    }
    setups = {name: (name, {}) for name in servers} | {"batching, over HTTP": ("batching", {"http": True})}
    drivers = _start_drivers()
    reps, seconds = (1, 2.0) if quick else (3, 4.0)
    runs: dict[str, list[dict]] = {}
    try:
        for s in servers.values():
            s.wait_ready()
        progress.update(t, total=1 + reps * len(setups))
        progress.advance(t)
        rng = np.random.default_rng(1)
        for _ in range(reps):
            for name in rng.permutation(list(setups)):
                server, mode = setups[str(name)]
                s = servers[server]
                cpu0 = s.cpu_seconds()
                r = _drive(
                    drivers,
                    {
                        "url": s.http_url if mode.get("http") else s.url,
                        "model": "digits",
                        "input_name": "input",
                        "shape": [1, 1, 8, 8],
                        "seconds": seconds,
                        "tls_ca": str(s.tls_ca or ""),
                        **mode,
                    },
                    64,
                )
                cpu1 = s.cpu_seconds()
                # the window also spans the load generator's start-up, when the server is idle
                r["cpu_us"] = (cpu1 - cpu0) * 1e6 / max(r["requests"], 1) if cpu0 is not None else None
                runs.setdefault(str(name), []).append(r)
                progress.advance(t)
    finally:
        _stop_drivers(drivers)
        for s in servers.values():
            s.stop()
    med = lambda name, key: (
        statistics.median(r[key] for r in runs[name]) if all(r[key] is not None for r in runs[name]) else None
    )
    rows = [
        {
            "setup": f"fedge edge serve (digits), {name}",
            "clients": 64,
            "requests/s": med(name, "throughput"),
            "p50 ms": med(name, "p50_ms"),
            "p99 ms": med(name, "p99_ms"),
            "server CPU us / request": med(name, "cpu_us"),
            "errors": sum(r["errors"] for r in runs[name]),
        }
        for name in setups
    ]
    sec.tables.append(
        (
            f"Server front end: the digits model (about 0.01 ms per call) at 64 clients, {seconds:g} s per"
            f" measurement, median of {reps} repetition(s)",
            rows,
        )
    )
    sec.figures["frontend_rps_c64"] = med("batching", "throughput")
    sec.figures["frontend_cpu_us_per_request"] = med("batching", "cpu_us")
    sec.figures["frontend_cpu_us_per_request_tls"] = med("batching, TLS", "cpu_us")
    sec.figures["frontend_cpu_us_per_request_traced"] = med("batching, tracing every request", "cpu_us")
    sec.figures["frontend_cpu_us_per_request_http"] = med("batching, over HTTP", "cpu_us")
    sec.notes.append(
        "Front end: the server answers gRPC on an asyncio loop (grpc.aio); batched requests wait for their batch on"
        " the loop, and one finished batch wakes the loop once. Measured by hand side by side with the previous commit,"
        " the thread-per-request server it replaced used about 1.5x the server CPU per request (440-470 against about"
        " 305 us; 2,300-2,500 against about 3,800 requests/s at 64 clients), because every request's handler thread"
        " had to be woken and fight for the GIL. This machine's speed varies from hour to hour (shared host): compare"
        " rows of one run, not figures across runs."
    )
    sec.notes.append(
        "TLS row: the same server with --tls-cert/--tls-key (an ECDSA P-384 certificate from `fedge certs init`),"
        " tritonclient with ssl=True; the handshake happens once per connection, so what remains is encrypting each"
        " message. Tracing row: --trace-config level=TIMESTAMPS rate=1 (every request traced, the worst case; the"
        " default rate is 1 in 1000), traces written every 10,000. HTTP row: the batching server's KServe v2 REST"
        " endpoint (fedge's own asyncio HTTP/1.1 server on the same loop) driven by tritonclient.http.aio, binary"
        " tensors, 64 keep-alive connections."
    )
