"""What the edge runtime costs a small device: time from ``fedge edge serve`` to a ready model, the server's
memory idle and at its peak after serving, the import time of the runtime, and the size of the edge install.
Run with this interpreter (the newest ONNX Runtime) and with the device install ``make test`` builds in
.venv-device (Python 3.10, ``pip install .[edge]`` only, the oldest ONNX Runtime fedge supports), each serving
the ResNet-18-style INT8 bundle of the serving benchmark. ``python -m bench --only footprint --docs docs/device``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import resnet, serving
from .report import Section

DEVICE_PYTHON = Path(__file__).resolve().parents[1] / ".venv-device" / "bin" / "python"
PROBE = (
    "import sys, time; t = time.perf_counter(); import fedge.edge_runtime.process.serve, onnxruntime;"
    " print(time.perf_counter() - t, '%d.%d.%d' % sys.version_info[:3], onnxruntime.__version__, sep=',')"
)


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise KeyError(field)


def _site_packages_mb(python: str) -> dict[str, float]:
    """MiB per top-level entry of ``python``'s site-packages, largest first."""
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sizes = {}
    for top in Path(out).iterdir():
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        sizes[top.name] = sum(p.stat().st_size for p in files) / 2**20
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def _serve_once(work: Path, bundle: Path, pub: Path, python: str, requests: int) -> dict:
    """Start a server with ``python``, time it to a ready model, read its memory idle, serve ``requests``
    batch-1 requests and one of batch 64, read its memory again, stop it."""
    import grpc

    from fedge.proto import grpc_service_pb2 as pb
    from fedge.proto import grpc_service_pb2_grpc as pb_grpc

    t0 = time.perf_counter()
    server = serving._Server(work, bundle, pub, "footprint", python=python)
    try:
        server.wait_ready()
        ready_s = time.perf_counter() - t0
        idle_mb = _status_kb(server.proc.pid, "VmRSS") / 1024
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            for rows in [1] * requests + [64]:
                x = np.random.default_rng(rows).standard_normal((rows, *resnet.INPUT)).astype(np.float32)
                req = pb.ModelInferRequest(model_name="resnet", raw_input_contents=[x.tobytes()])
                req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
                stub.ModelInfer(req, timeout=60)
        served_mb = _status_kb(server.proc.pid, "VmRSS") / 1024
        peak_mb = _status_kb(server.proc.pid, "VmHWM") / 1024
    finally:
        server.stop()
    return {"ready_s": ready_s, "idle_mb": idle_mb, "served_mb": served_mb, "peak_mb": peak_mb}


def run(work: Path, progress, quick: bool = False, docs: Path | None = None) -> Section:
    from fedge.edge_runtime.distribution.bundle import generate_keys, load_private_key

    sec = Section("Footprint on a small device (ResNet-18-style INT8, ONNX Runtime CPU)")
    work.mkdir(parents=True, exist_ok=True)
    priv, pub = generate_keys(work / "keys")
    bundle = serving._bundle(work, resnet.build(work / "model"), load_private_key(priv))
    installs = {"host": sys.executable}
    if DEVICE_PYTHON.exists():
        installs["device"] = str(DEVICE_PYTHON)
    else:
        sec.notes.append(
            "No device install (.venv-device: `make test` builds it where Python 3.10 exists): only"
            " this interpreter was measured."
        )
    starts, requests, imports = (2, 50, 3) if quick else (5, 300, 7)
    task = progress.add_task("footprint: server starts per install", total=starts * len(installs))
    rows = []
    for name, python in installs.items():
        probes = [
            subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(imports)
        ]
        import_s = statistics.median(float(p.split(",")[0]) for p in probes)
        _, py_version, ort_version = probes[0].split(",")
        runs = []
        for _ in range(starts):
            runs.append(_serve_once(work, bundle, pub, python, requests))
            progress.advance(task)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        sec.figures.update(
            {
                f"edge_ready_s_{name}": med["ready_s"],
                f"edge_rss_idle_mb_{name}": med["idle_mb"],
                f"edge_rss_peak_mb_{name}": med["peak_mb"],
                f"edge_import_s_{name}": import_s,
            }
        )
        rows.append(
            {
                "install": name,
                "python": py_version,
                "onnxruntime": ort_version,
                "import fedge.edge_runtime.process.serve + onnxruntime s": import_s,
                "start to ready model s (min / median / max)": " / ".join(
                    f"{f(r['ready_s'] for r in runs):.2f}" for f in (min, statistics.median, max)
                ),
                "RSS idle MiB": med["idle_mb"],
                f"RSS after {requests} + 1 requests MiB": med["served_mb"],
                "peak RSS MiB": med["peak_mb"],
            }
        )
        sec.data[name] = {"runs": runs, "import_s": [float(p.split(",")[0]) for p in probes]}
    if "device" in installs:
        sizes = _site_packages_mb(installs["device"])
        sec.figures["edge_install_mb_device"] = sum(sizes.values())
        sec.figures["edge_tokenizers_mb_device"] = sizes.get("tokenizers")
        sec.data["device_site_packages_mb"] = sizes
        sec.notes.append(
            "The device install's largest packages: "
            + ", ".join(f"{name} {mb:.0f} MiB" for name, mb in list(sizes.items())[:6])
            + "."
        )
    sec.tables.append(
        (
            f"Per install: medians of {starts} server starts (each a fresh process that loads and warms"
            " the model, then serves)",
            rows,
        )
    )
    sec.notes += [
        "Start to ready: from spawning `fedge edge serve` until ModelReady is true over gRPC (Python start-up,"
        " imports, signature and sha256 checks of the installed bundle, ONNX Runtime session, warm-up).",
        "RSS is the server process's resident memory (/proc: VmRSS, and VmHWM for the peak); the INT8 model it"
        f" runs is a {(bundle / 'model.int8.cpu.onnx').stat().st_size / 2**20:.1f} MiB file."
        " `edge_install_mb_device` is the size of the device install's site-packages: everything"
        " `pip install .[edge]` put there, and `tokenizers` for text releases (`edge_tokenizers_mb_device`),"
        " installed with `pip install --no-deps` (a plain `pip install tokenizers` also pulls huggingface_hub,"
        " hf-xet, httpx2, fsspec and 13 more packages the device never imports: 30.9 MB more, measured by hand"
        " in two fresh Python 3.10 virtualenvs on 2026-12-02, 33.5 against 64.4 MB of site-packages).",
    ]
    return sec
